"""A flow hook dispatched to an addon and all its children as mitmproxy does it (the gateway is
several addons), for unit tests inside `taddons.context`."""

from mitmproxy import ctx, http
from mitmproxy.proxy.layers import http as layers


def requestheaders(addon: object, flow: http.HTTPFlow) -> None:
    ctx.master.addons.invoke_addon_sync(addon, layers.HttpRequestHeadersHook(flow))


async def request(addon: object, flow: http.HTTPFlow) -> None:
    await ctx.master.addons.invoke_addon(addon, layers.HttpRequestHook(flow))


def responseheaders(addon: object, flow: http.HTTPFlow) -> None:
    ctx.master.addons.invoke_addon_sync(addon, layers.HttpResponseHeadersHook(flow))


def response(addon: object, flow: http.HTTPFlow) -> None:
    ctx.master.addons.invoke_addon_sync(addon, layers.HttpResponseHook(flow))
