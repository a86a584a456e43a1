"""What mitmproxy's own `mode` and `listen_host` options say: where it listens, and the upstream
proxy (`--mode upstream:URL`) the gateway's own calls follow too."""

from collections.abc import Sequence

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
