"""Which requests are for the gateway: its hostnames, or the proxy's own listening address."""

import ipaddress
import re

LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){LABEL}(\.{LABEL})*$")
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})


def parse_hosts(option: str) -> tuple[str, ...]:
    """The gomodel_hosts option: comma-separated hostnames, lowercased, duplicates dropped."""
    hosts: list[str] = []
    for item in option.split(","):
        host = item.strip().lower().rstrip(".")
        if not host:
            continue
        if not HOSTNAME.match(host):
            raise ValueError(f"{item.strip()!r} is not a hostname")
        if host not in hosts:
            hosts.append(host)
    return tuple(hosts)


def is_loopback(host: str) -> bool:
    if host in LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def is_gateway_request(
    host: str, port: int, hosts: tuple[str, ...], listen: tuple[str, int] | None
) -> bool:
    """A request to a gateway hostname, or sent straight to the proxy port (curl localhost:8080).

    `listen` is the address the client connected to (mitmproxy's client_conn.sockname).
    """
    host = host.lower().rstrip(".")
    if host in hosts:
        return True
    if not listen or port != listen[1]:
        return False
    listen_host = listen[0].lower()
    return host == listen_host or (is_loopback(host) and is_loopback(listen_host))
