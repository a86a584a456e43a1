"""What mitmproxy's own options say for the gateway: where it listens (`mode`, `listen_host`),
and how the gateway's own calls to Oracle connect: the upstream proxy (`--mode upstream:URL`) and
TLS (`ssl_insecure`, `ssl_verify_upstream_trusted_ca`, `..._confdir`), as mitmproxy's do."""

import ssl
from collections.abc import Sequence
from typing import Any

import certifi
from mitmproxy.proxy import mode_specs

from .transport import UpstreamProxy


def listen_hosts(listen_host: str, modes: Sequence[str]) -> list[str]:
    """The addresses mitmproxy listens on ("" for every interface), from its options."""
    hosts = []
    for spec in modes:
        try:
            hosts.append(mode_specs.ProxyMode.parse(spec).listen_host(listen_host))
        except ValueError:
            hosts.append("")  # unknown: assume exposed
    return hosts


def upstream_proxy(modes: Sequence[str], upstream_auth: str | None) -> UpstreamProxy | None:
    """mitmproxy's `--mode upstream:URL`, which the gateway's own calls follow too."""
    for spec in modes:
        try:
            mode = mode_specs.ProxyMode.parse(spec)
        except ValueError:
            continue
        if isinstance(mode, mode_specs.UpstreamMode):
            scheme, (host, port) = mode.scheme, mode.address
            user, _, password = (upstream_auth or "").partition(":")
            return UpstreamProxy(f"{scheme}://{host}:{port}", (user, password) if user else None)
    return None


def upstream_tls_context(options: Any) -> ssl.SSLContext:
    """TLS settings for the gateway's own calls, matching mitmproxy's upstream options."""
    context = ssl.create_default_context(
        cafile=options.ssl_verify_upstream_trusted_ca or certifi.where(),
        capath=options.ssl_verify_upstream_trusted_confdir or None,
    )
    if options.ssl_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
