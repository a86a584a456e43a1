"""The mitmproxy addon: thin hooks that call the pure modules beside it.

Life of a gateway request:
- requestheaders: is it for the gateway (a gomodel_hosts name, or the proxy's own port)? Then its
  body is buffered (routing needs it; nothing may stream to the original host), and what the
  headers already condemn is answered: unknown path, wrong method, missing master key, a body
  too large or compressed.
- request: answer locally (/v1/models, /health, every error), or route the call. A plain call is
  sent by the `Transport` (retries, failover, timeouts) and its answer set as the response; a
  streamed call is handed to the `StreamRelay`, and the flow is pointed at it so mitmproxy
  streams the answer through. The Oracle key is set on the gateway's own requests only; it never
  sits on a mitmproxy flow, so mitmweb, saved flows and logs cannot show it.
- responseheaders: streams pass through chunk by chunk, watched for usage on the side.
Every hook fails closed: an exception answers the client with a 502 and sends nothing upstream.
"""

import asyncio
import functools
import inspect
import logging
import ssl
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import certifi
from mitmproxy import connection, ctx, exceptions, http
from mitmproxy.proxy import mode_specs, server_hooks

from . import local, safejson
from .accesslog import AccessRecord, clip
from .adapt import STARVED_WARNING, starved
from .auth import check_client_key, is_client_key
from .config import ConfigError, GatewayConfig, Provider, check_reload
from .discovery import Discovery, fetch_models
from .errors import JSON_HEADERS, GatewayError, error_body
from .exposure import (
    Exposure,
    cors_headers,
    decide_exposure,
    is_looping,
    loop_detected,
    new_via_token,
    origin_allowed,
    origin_refused,
    passthrough_refused,
    preflight_headers,
)
from .hosts import is_gateway_request, is_listen_address, is_loopback
from .inventory import build_inventory
from .metrics import Metrics
from .oci_discovery import fetch_oci_models
from .options import OPTION_NAMES, Settings, declare_options, read_settings
from .relay import REFUSAL_PATH, StreamJob, StreamRelay
from .resilience import CircuitBreaker, breakers_for
from .routing import (
    UPSTREAM_ENDPOINTS,
    Endpoint,
    Request,
    Route,
    check_body_size,
    check_declared_body,
    classify,
    route,
)
from .sse import StreamSummary, UsageChunkFilter, usage_tokens
from .transport import Reply, Transport
from .upstream import (
    CLIENT_CREDENTIAL_HEADERS,
    FRAMING,
    check_forwarded_headers,
    is_returned,
)
from .watch import watch_file
from .workarounds import bound_request_heads, close_leftover_socket

logger = logging.getLogger("gomodel")

UPSTREAM_TLS_OPTIONS = frozenset(
    {"ssl_insecure", "ssl_verify_upstream_trusted_ca", "ssl_verify_upstream_trusted_confdir"}
)
LISTEN_OPTIONS = frozenset({"listen_host", "mode"})
MAX_LOGGED_PATH = 200
REDACTED = "[redacted by gomodel]"


@dataclass
class Exchange:
    """Per-flow state of a gateway request (kept off the flow: flow.metadata is saved)."""

    started: float
    request: Request | None = None
    route: Route | None = None
    reply: Reply | None = None  # a plain call's answer
    job: StreamJob | None = None  # a streamed call, answered through the relay
    stream: StreamSummary | None = None
    tokens: tuple[int | None, int | None] = (None, None)
    starved: bool = False  # the answer was cut off by its output budget before any text
    first_byte: float | None = None  # when the answer (a stream's headers) left for the client
    error: str | None = None  # the code of a refused or failed request
    client_path: str = ""  # the path as the client sent it (the flow may be pointed elsewhere)
    finished: bool = False
    authenticated: bool = False  # presented a master key, or none is needed
    origin: str | None = None  # the allowed web origin the request came from
    relay_path: str | None = None  # where mitmproxy fetches the answer in the relay
    refusal: GatewayError | None = None  # a refusal answered without reading the body
    sent: "SentRequest | None" = None  # the request as the client sent it, while at the relay

    @property
    def final_reply(self) -> Reply | None:
        return self.job.reply if self.job else self.reply


@dataclass(frozen=True)
class SentRequest:
    """What a client sent, kept while its flow is pointed at the relay (which needs nothing of
    it but a path), and put back so that mitmweb and flow files show the request as sent."""

    scheme: str
    host: str
    port: int
    path: str
    headers: http.Headers
    content: bytes | None

    @classmethod
    def of(cls, request: http.Request) -> "SentRequest":
        return cls(
            request.scheme,
            request.host,
            request.port,
            request.path,
            request.headers.copy(),
            request.raw_content,
        )

    def put_back(self, request: http.Request) -> None:
        request.scheme, request.host, request.port = self.scheme, self.host, self.port
        request.path, request.headers = self.path, self.headers
        if self.content is not None:
            request.raw_content = self.content


Hook = Callable[["GoModel", http.HTTPFlow], Any]


def fail_closed(hook: Hook) -> Hook:
    """Answer 502 instead of letting mitmproxy pass the flow on unmodified after an exception."""

    def contain(self: "GoModel", flow: http.HTTPFlow, error: Exception) -> None:
        logger.error("gomodel: internal error in %s hook", hook.__name__, exc_info=error)
        exchange = self.exchanges.pop(flow, None)  # later hooks leave this flow alone
        if hook.__name__ in ("http_connect", "requestheaders"):
            consequence = "nothing was sent to Oracle"
        elif hook.__name__ == "request":
            routed = exchange is not None and exchange.route is not None
            consequence = "Oracle may have received it" if routed else "nothing was sent to Oracle"
        else:
            consequence = "Oracle's answer is lost"
        flow.response = http.Response.make(
            502,
            error_body(
                502,
                f"The gateway failed while handling this request ({type(error).__name__}); "
                f"{consequence}. See the gateway log for details.",
                code="gateway_error",
                error_type="gateway_error",
            ),
            JSON_HEADERS,
        )
        flow.comment = "gomodel gateway_error"
        flow.marked = ":red_circle:"

    if inspect.iscoroutinefunction(hook):

        @functools.wraps(hook)
        async def async_wrapper(self: "GoModel", flow: http.HTTPFlow) -> None:
            try:
                await hook(self, flow)
            except Exception as e:
                contain(self, flow, e)

        return async_wrapper

    @functools.wraps(hook)
    def wrapper(self: "GoModel", flow: http.HTTPFlow) -> None:
        try:
            hook(self, flow)
        except Exception as e:
            contain(self, flow, e)

    return wrapper


class GoModel:
    def __init__(self) -> None:
        self.settings = Settings()
        self.discovered: dict[str, tuple[str, ...]] = {}
        self.inventory = build_inventory((), {}, int(time.time()))
        self.breakers: dict[str, CircuitBreaker] = {}
        self.transport = Transport(self.upstream_ssl_context)
        self.relay = StreamRelay()
        self.metrics = Metrics()
        self.discovery: Discovery | None = None
        self.config_watch: asyncio.Task[None] | None = None
        self.exchanges: weakref.WeakKeyDictionary[http.HTTPFlow, Exchange] = (
            weakref.WeakKeyDictionary()
        )
        self.ssl_context: ssl.SSLContext | None = None
        self.is_running = False
        self.exposure = Exposure(False, "not configured yet")
        self.via_token = new_via_token()

    def load(self, loader: Any) -> None:
        declare_options(loader)
        bound_request_heads()

    # -- configuration -------------------------------------------------------------------------

    @property
    def config(self) -> GatewayConfig:
        return self.settings.config

    @property
    def hosts(self) -> tuple[str, ...]:
        return self.settings.hosts

    def configure(self, updated: set[str]) -> None:
        if updated & UPSTREAM_TLS_OPTIONS:
            self.ssl_context = None
        if not updated & OPTION_NAMES:
            if updated & LISTEN_OPTIONS:
                self.update_exposure()
            return
        try:
            settings = read_settings()
            if self.is_running:
                check_reload(self.config, settings.config)
        except ConfigError as e:
            if self.is_running:  # mitmproxy rejects the change and keeps the current state
                raise exceptions.OptionsError(f"gomodel: {e}") from None
            # At startup an error log line makes mitmproxy exit 1, with this message alone
            # instead of the traceback an exception from a script's configure() prints.
            logger.error("gomodel: %s", e)
            return
        self.apply(settings)

    def apply(self, settings: Settings) -> None:
        """Replace all configuration-derived state; requests in flight keep what they hold."""
        path_changed = settings.config_path != self.settings.config_path
        self.stop_discovery()
        self.settings, self.discovered = settings, {}
        names = tuple(p.name for p in settings.config.providers)
        self.breakers = breakers_for(names, settings.config.failover, self.breakers)
        self.transport.configure(settings.config.retries, settings.config.failover, self.breakers)
        self.rebuild_inventory()
        self.log_configuration()
        self.update_exposure()
        if self.is_running:
            self.start_discovery()
            if path_changed:
                self.start_config_watch()

    def reload_config_file(self) -> None:
        try:
            settings = read_settings(reload=True)
            check_reload(self.config, settings.config)
        except ConfigError as e:
            logger.error(
                "gomodel: configuration not reloaded, the previous one keeps serving: %s", e
            )
            return
        logger.info("gomodel: %s changed, configuration reloaded", settings.config_path)
        self.apply(settings)

    def start_config_watch(self) -> None:
        if self.config_watch:
            self.config_watch.cancel()
        self.config_watch = asyncio.get_running_loop().create_task(
            watch_file(self.settings.config_path, self.reload_config_file),
            name="gomodel config watch",
        )

    def log_configuration(self) -> None:
        config = self.config
        if config.source:
            logger.info("gomodel: configuration from %s", config.source)
        for warning in config.warnings:
            logger.warning("gomodel: %s", warning)
        for provider in config.providers:
            logger.info(
                "gomodel: provider %s: host %s, %d models configured, models_mode %s",
                provider.name,
                provider.host,
                len(provider.models),
                provider.models_mode,
            )
        if not config.providers:
            logger.warning(
                "gomodel: no Oracle provider is configured: set ORACLE_BASE_URL, ORACLE_API_KEY "
                "and ORACLE_MODELS, or add providers to config.yaml"
            )
        logger.info(
            "gomodel: serving %s and requests sent straight to the proxy port",
            ", ".join(self.hosts) or "no hostnames",
        )

    def update_exposure(self) -> None:
        """Decide again whether other traffic may pass through (settings or listen addresses
        changed); say so when the answer changes."""
        options = ctx.options
        exposure = decide_exposure(
            self.settings.passthrough,
            bool(self.config.master_keys),
            listen_hosts(options.listen_host, options.mode),
        )
        if exposure != self.exposure:
            logger.info("gomodel: %s", exposure.describe())
        self.exposure = exposure

    def rebuild_inventory(self) -> None:
        self.inventory = build_inventory(
            self.config.providers, self.discovered, self.inventory.created
        )

    async def running(self) -> None:
        # Gateway hostnames don't resolve: mitmproxy must not connect before the rewrite.
        if ctx.options.connection_strategy != "lazy":
            ctx.options.update(connection_strategy="lazy")
            logger.info("gomodel: set connection_strategy=lazy so gateway hostnames need no DNS")
        unknown = sorted(name for name in ctx.options.deferred if name.startswith("gomodel_"))
        if unknown:
            logger.error("gomodel: unknown option(s): %s", ", ".join(unknown))
        if not self.config.master_keys and not is_loopback(ctx.options.listen_host):
            logger.warning(
                "gomodel: listening on %s without a master key: anyone who can reach this port "
                "can use your Oracle key; set GOMODEL_MASTER_KEY",
                ctx.options.listen_host or "all interfaces",
            )
        self.is_running = True
        await self.relay.start()
        self.start_discovery()
        self.start_config_watch()

    async def done(self) -> None:
        self.stop_discovery()
        if self.config_watch:
            self.config_watch.cancel()
            self.config_watch = None
        self.is_running = False
        await self.relay.stop()
        await self.transport.close()

    def start_discovery(self) -> None:
        self.discovery = Discovery(self.config.providers, self.fetch_models, self.on_discovered)
        self.discovery.start()

    def stop_discovery(self) -> None:
        if self.discovery:
            self.discovery.stop()
            self.discovery = None

    def fetch_models(self, provider: Provider) -> tuple[str, ...]:
        """Blocking (run in a thread): Oracle's /models, or the OCI control plane's listing."""
        if provider.discovery == "oci":
            options = ctx.options
            return fetch_oci_models(
                provider, options.ssl_verify_upstream_trusted_ca, not options.ssl_insecure
            )
        return fetch_models(provider, self.upstream_ssl_context())

    def on_discovered(self, provider_name: str, models: tuple[str, ...]) -> None:
        self.discovered[provider_name] = models
        self.rebuild_inventory()

    def upstream_ssl_context(self) -> ssl.SSLContext:
        """TLS settings for the gateway's own calls, matching mitmproxy's upstream options."""
        if self.ssl_context is None:
            options = ctx.options
            context = ssl.create_default_context(
                cafile=options.ssl_verify_upstream_trusted_ca or certifi.where(),
                capath=options.ssl_verify_upstream_trusted_confdir or None,
            )
            if options.ssl_insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self.ssl_context = context
        return self.ssl_context

    # -- requests ------------------------------------------------------------------------------

    @fail_closed
    def http_connect(self, flow: http.HTTPFlow) -> None:
        """A CONNECT elsewhere is refused while pass-through is closed, before any tunnel."""
        if self.exposure.open or self.is_for_gateway(flow):
            return
        exchange = self.start(flow, f"CONNECT {flow.request.host}:{flow.request.port}")
        target = f"{flow.request.host}:{flow.request.port}"
        self.refuse(flow, exchange, passthrough_refused(target))

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response:
            return
        request = flow.request
        if is_looping(request.headers.get_all("via"), self.via_token):
            self.refuse_unread(flow, self.start(flow, request.pretty_url), loop_detected())
            return
        if not self.is_for_gateway(flow):
            if self.exposure.open and self.connection_refusal((request.host, request.port)):
                self.refuse_unread(flow, self.start(flow, request.pretty_url), loop_detected())
                return
            if self.exposure.open:  # marked, so that a request coming back to us is a loop
                request.headers.add("via", f"1.1 {self.via_token}")
                return
            exchange = self.start(flow, request.pretty_url)
            self.refuse_unread(flow, exchange, passthrough_refused(request.pretty_url))
            return
        # Buffer the body: routing needs it, and nothing may stream to the original host.
        request.stream = False
        authorization = request.headers.get("authorization")  # before start() redacts it
        exchange = self.start(flow, request.path)
        try:
            if self.answer_preflight(flow, exchange):
                return
            exchange.request = self.admit(exchange, request, authorization)
        except GatewayError as e:
            self.refuse_unread(flow, exchange, e)

    def is_for_gateway(self, flow: http.HTTPFlow) -> bool:
        return is_gateway_request(
            flow.request.host, flow.request.port, self.hosts, flow.client_conn.sockname
        )

    def start(self, flow: http.HTTPFlow, client_path: str) -> Exchange:
        """A request the gateway answers (served or refused): its credentials, once read, are
        never forwarded, nor kept for mitmweb or flow files."""
        for name in CLIENT_CREDENTIAL_HEADERS:
            if name in flow.request.headers:
                flow.request.headers[name] = REDACTED
        exchange = self.exchanges[flow] = Exchange(
            started=time.monotonic(), client_path=client_path[:MAX_LOGGED_PATH]
        )
        return exchange

    def answer_preflight(self, flow: http.HTTPFlow, exchange: Exchange) -> bool:
        """Browsers: only allowed origins may call; their CORS preflights are answered here.
        True when the request was answered."""
        origin = flow.request.headers.get("origin")
        if origin is None:
            return False
        if not origin_allowed(origin, self.settings.allowed_origins):
            raise origin_refused(origin)
        exchange.origin = origin
        preflight = flow.request.method == "OPTIONS" and (
            "access-control-request-method" in flow.request.headers
        )
        if preflight:
            flow.response = http.Response.make(
                204, b"", preflight_headers(origin, flow.request.headers)
            )
            self.finish(flow, exchange)
        return preflight

    def admit(
        self, exchange: Exchange, request: http.Request, authorization: str | None
    ) -> Request:
        """What the headers alone decide: the endpoint, the key, the declared body."""
        keys = self.config.master_keys
        try:
            classified = classify(request.method, request.path)
        except GatewayError:
            check_client_key(authorization, keys)  # a stranger learns nothing about paths
            raise
        exchange.authenticated = is_client_key(authorization, keys)
        if classified.endpoint is not Endpoint.HEALTH:
            check_client_key(authorization, keys)
        check_declared_body(
            request.headers.get("content-length"),
            request.headers.get("content-encoding"),
            self.settings.max_body_size,
        )
        return classified

    def refuse_unread(self, flow: http.HTTPFlow, exchange: Exchange, error: GatewayError) -> None:
        """Refuse a request from its headers without reading its body (see relay.py): the
        body is dropped as it arrives and the connection closed after the answer. (Before the
        relay runs, as in unit tests, the body is read first.)"""
        if not (may_have_body(flow.request) and self.relay.port):
            self.refuse(flow, exchange, error)
            return
        exchange.refusal = error
        flow.request.stream = drop_body
        self.point_at_relay(flow, exchange, REFUSAL_PATH)

    def point_at_relay(self, flow: http.HTTPFlow, exchange: Exchange, path: str) -> None:
        """mitmproxy fetches this flow's answer from the relay: no client header goes there (no
        body, no 100 Continue, nothing its parser could refuse) and no body bytes."""
        request = flow.request
        exchange.sent = SentRequest.of(request)
        request.scheme, request.host, request.port = "http", "127.0.0.1", self.relay.port
        request.path = path
        request.headers = http.Headers(host=f"127.0.0.1:{self.relay.port}")
        if request.raw_content:
            request.raw_content = b""

    def put_back(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        if exchange.sent:
            exchange.sent.put_back(flow.request)
            exchange.sent = None

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        exchange = self.exchanges.get(flow)
        if exchange is None or exchange.request is None or flow.response:
            return
        request, inventory = exchange.request, self.inventory
        try:
            if request.endpoint not in UPSTREAM_ENDPOINTS:
                self.answer_locally(flow, exchange, request)
                return
            content = flow.request.raw_content or b""
            check_body_size(len(content), self.settings.max_body_size)
            planned = route(inventory, request, content, self.settings.stream_usage)
        except GatewayError as e:
            self.refuse(flow, exchange, e)
            return
        client_headers = list(flow.request.headers.items(multi=True))
        try:
            check_forwarded_headers(client_headers)
        except GatewayError as e:
            self.refuse(flow, exchange, e)
            return
        exchange.route = planned
        flow.metadata["gomodel"] = {
            "requested_model": planned.requested_model,
            "upstream_model": planned.target.upstream_model,
            "candidates": [t.provider.name for t in planned.candidates],
            "endpoint": planned.endpoint.value,
            "stream": planned.stream,
        }
        if planned.stream:
            await self.relay.start()
            exchange.job = StreamJob(planned, client_headers, self.transport)
            try:
                exchange.relay_path = self.relay.register(exchange.job)
            except GatewayError as e:
                self.refuse(flow, exchange, e)
                return
            self.point_at_relay(flow, exchange, exchange.relay_path)
            return
        try:
            reply = exchange.reply = await self.transport.send(planned, client_headers)
        except GatewayError as e:
            self.refuse(flow, exchange, e)
            return
        flow.response = http.Response.make(reply.status, reply.body, wire_headers(reply.headers))
        exchange.first_byte = time.monotonic()
        if 200 <= reply.status < 300:
            document = parse_json(reply.body)
            exchange.tokens = usage_tokens(document.get("usage") if document else None)
            if starved(document):
                flow.response.headers["x-gomodel-warning"] = STARVED_WARNING
                exchange.starved = True
        self.finish(flow, exchange)

    def answer_locally(self, flow: http.HTTPFlow, exchange: Exchange, request: Request) -> None:
        if request.endpoint is Endpoint.METRICS:
            self.metrics.set_state(
                {name: len(models) for name, models in self.inventory.models.items()},
                self.breaker_states(),
            )
            headers = {"content-type": self.metrics.content_type}
            flow.response = http.Response.make(200, self.metrics.exposition(), headers)
        else:
            body = local.answer(
                self.inventory,
                request,
                self.hosts,
                self.breaker_states(),
                detailed=exchange.authenticated,
            )
            flow.response = http.Response.make(200, body, JSON_HEADERS)
        self.finish(flow, exchange)

    def refuse(self, flow: http.HTTPFlow, exchange: Exchange, error: GatewayError) -> None:
        flow.response = http.Response.make(error.status, error.body(), error.response_headers())
        exchange.error = error.code
        self.finish(flow, exchange)

    # -- responses -----------------------------------------------------------------------------

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        exchange = self.exchanges.get(flow)
        if exchange is None or flow.response is None:
            return
        if exchange.origin:
            flow.response.headers.update(cors_headers(exchange.origin))
        if exchange.job is None:
            return
        self.put_back(flow, exchange)  # the request has gone to the relay
        # The relay's own headers (Server, Date) are not for clients.
        for name in list(flow.response.headers):
            if not (is_returned(name) or name.lower() in FRAMING):
                del flow.response.headers[name]
        exchange.first_byte = time.monotonic()
        content_type = flow.response.headers.get("content-type", "")
        if 200 <= flow.response.status_code < 300 and content_type.startswith("text/event-stream"):
            summary = exchange.stream = StreamSummary()
            flow.response.stream = self.stream_through(flow, exchange, summary)

    def stream_through(
        self, flow: http.HTTPFlow, exchange: Exchange, summary: StreamSummary
    ) -> Callable[[bytes], bytes]:
        hide_usage = UsageChunkFilter() if exchange.route and exchange.route.usage_added else None

        def forward(chunk: bytes) -> bytes:
            try:
                if chunk:
                    summary.feed(chunk)
                else:  # mitmproxy's end-of-stream call
                    self.finish(flow, exchange)
            except Exception:
                logger.exception("gomodel: failed to inspect a stream chunk")
            return hide_usage.feed(chunk) if hide_usage else chunk

        return forward

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        exchange = self.exchanges.get(flow)
        if exchange is None or flow.response is None:
            return
        if exchange.refusal:
            self.answer_refusal(flow, exchange, exchange.refusal)
        elif exchange.job and not flow.response.stream:  # a stream Oracle answered with an error
            self.finish(flow, exchange)

    def answer_refusal(self, flow: http.HTTPFlow, exchange: Exchange, error: GatewayError) -> None:
        """The relay ended a refused request: show it as the client sent it, and answer it."""
        self.put_back(flow, exchange)
        self.refuse(flow, exchange, error)
        if exchange.origin:
            flow.response.headers.update(cors_headers(exchange.origin))
        if flow.request.http_version.startswith("HTTP/1"):
            flow.response.headers["connection"] = "close"

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        exchange = self.exchanges.get(flow)
        if exchange is None or exchange.finished:
            return
        if exchange.relay_path:  # the client left before mitmproxy fetched its stream
            self.relay.discard(exchange.relay_path)
        self.put_back(flow, exchange)
        exchange.error = "client_gone" if flow.error else "ended_early"
        self.finish(flow, exchange, f"ended early: {flow.error.msg if flow.error else '-'}")

    def client_disconnected(self, client: connection.Client) -> None:
        if close_leftover_socket(ctx.master.addons.get("proxyserver"), client):
            logger.debug("gomodel: closed a client socket mitmproxy left open")

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Every connection mitmproxy itself opens (HTTP, raw TCP inside a tunnel, UDP): while
        pass-through is closed, only to the relay, since the gateway needs nothing else; never
        to this proxy, under any name of this machine. (A killed TCP flow is still connected by
        mitmproxy, so this is where raw traffic is stopped.)"""
        try:
            refusal = self.connection_refusal(data.server.address)
        except Exception:  # fail closed: an unexpected error must not open the proxy
            logger.exception("gomodel: failed to check a server connection")
            refusal = "gomodel: internal error while checking the destination"
        if refusal:
            data.server.error = refusal

    def connection_refusal(self, address: tuple[str, int] | None) -> str | None:
        if address is None:
            return None
        host, port = address[0], address[1]
        if self.relay.port and (host, port) == ("127.0.0.1", self.relay.port):
            return None
        if not self.exposure.open:
            return "gomodel: pass-through is closed; this proxy connects only for the gateway"
        proxyserver = ctx.master.addons.get("proxyserver")
        if is_listen_address(host, port, proxyserver.listen_addrs() if proxyserver else ()):
            return "gomodel: the destination is this proxy itself (a loop)"
        return None

    def breaker_states(self) -> dict[str, dict[str, object]]:
        now = time.monotonic()
        return {name: breaker.snapshot(now) for name, breaker in self.breakers.items()}

    def finish(self, flow: http.HTTPFlow, exchange: Exchange, *notes: str) -> None:
        """Once per gateway request: the access log line, the metrics, mitmweb's comment."""
        if exchange.finished:
            return
        exchange.finished = True
        now = time.monotonic()
        status = flow.response.status_code if flow.response else 0
        record = AccessRecord(
            method=flow.request.method,
            path=exchange.client_path,
            status=status,
            seconds=now - exchange.started,
            endpoint=exchange.request.endpoint.value if exchange.request else "",
            error=exchange.error,
            notes=list(notes),
            first_byte_seconds=(
                exchange.first_byte - exchange.started if exchange.first_byte else None
            ),
        )
        if exchange.route is None:  # answered or refused by the gateway itself
            self.metrics.record_local(record.endpoint or "unknown", status, exchange.error)
            self.write_access(flow, exchange, record)
            return
        if exchange.stream:
            exchange.tokens = exchange.stream.tokens()
            exchange.starved = exchange.stream.starved
        reply = exchange.final_reply
        target = reply.target if reply else exchange.route.target
        attempts = reply.attempts if reply else []
        record.provider, record.model = target.provider.name, target.upstream_model
        record.stream = exchange.route.stream
        record.tokens_in, record.tokens_out = exchange.tokens
        record.request_id = reply.request_id if reply else None
        record.attempts = [f"{a.provider} {a.outcome}" for a in attempts]
        if changes := exchange.route.adjustments.get(target.provider.name):
            record.notes.append("adjusted: " + ", ".join(changes))
        if exchange.stream and exchange.stream.error:
            record.notes.append(f"stream carried an error: {exchange.stream.error}")
        broken = bool(exchange.job and exchange.job.broken)
        if broken:
            record.notes.append(f"stream broken: {exchange.job.broken}")
        if exchange.starved:
            record.notes.append("starved: " + STARVED_WARNING)
        flow.metadata["gomodel"]["provider"] = target.provider.name
        self.metrics.record_call(
            target.provider.name,
            target.upstream_model,
            exchange.route.endpoint.value,
            status,
            exchange.route.stream,
            record.seconds,
            record.first_byte_seconds,
            exchange.tokens,
            attempts,
            broken,
        )
        if self.settings.log_bodies:
            record.request_body = clip(exchange.route.body)
            if reply and not reply.stream:
                record.response_body = clip(reply.body)
        self.write_access(flow, exchange, record, warning=broken or exchange.starved)

    def write_access(
        self, flow: http.HTTPFlow, exchange: Exchange, record: AccessRecord, warning: bool = False
    ) -> None:
        flow.comment = record.summary()
        if record.status >= 400 or record.error or warning:
            flow.marked = ":red_circle:" if record.status >= 400 or record.error else ":warning:"
        self.settings.access_log.write(record, warning)


def listen_hosts(listen_host: str, modes: Sequence[str]) -> list[str]:
    """The addresses mitmproxy listens on ("" for every interface), from its options."""
    hosts = []
    for spec in modes:
        try:
            hosts.append(mode_specs.ProxyMode.parse(spec).listen_host(listen_host))
        except ValueError:
            hosts.append("")  # unknown: assume exposed
    return hosts


def may_have_body(request: http.Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    if "transfer-encoding" in request.headers:
        return True
    return not request.http_version.startswith("HTTP/1")  # HTTP/2 and 3 need not declare it


def drop_body(chunk: bytes) -> bytes:
    """A refused request's body, as mitmproxy streams it: dropped."""
    return b""


def wire_headers(headers: Iterable[tuple[str, str]]) -> http.Headers:
    """Headers as bytes, whatever the upstream sent (aiohttp decodes them with surrogateescape)."""
    return http.Headers(
        [
            (k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape"))
            for k, v in headers
        ]
    )


def parse_json(body: bytes) -> dict[str, Any] | None:
    try:
        document = safejson.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None
