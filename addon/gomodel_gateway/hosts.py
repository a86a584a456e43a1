"""Which requests are for the gateway: its hostnames, or the proxy's own listening address."""

import functools
import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from typing import Any

LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){LABEL}(\.{LABEL})*$")
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})
MAX_HOSTNAME = 253

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


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


def ip_address(host: str) -> Address | None:
    """The address a host names, in any spelling the system resolver accepts for an IP literal:
    `127.1`, `0x7f000001`, `2130706433`, `0177.0.0.1`, `[::1]`, `::ffff:127.0.0.1`, `fe80::1%eth0`.
    None for a hostname."""
    host = host.strip().lower().removeprefix("[").removesuffix("]").split("%")[0]
    try:
        address: Address = ipaddress.ip_address(host)
    except ValueError:
        try:  # the classic inet_aton forms that getaddrinfo (and so mitmproxy) connects to
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") in LOCAL_NAMES:
        return True
    address = ip_address(host)
    return address is not None and address.is_loopback


def names_this_machine(host: str, listen_host: str) -> bool:
    """Whether a host, in any spelling, is this machine as seen from the proxy's listening
    address: loopback, the unspecified address (0.0.0.0 connects to the local machine), or the
    listening address itself."""
    if len(host) > MAX_HOSTNAME:  # no name of anything; and the cache below stays small
        return False
    return _names_this_machine(host.lower().rstrip("."), listen_host.lower())


@functools.lru_cache(maxsize=1024)  # asked on every request, for a handful of names
def _names_this_machine(host: str, listen_host: str) -> bool:
    if host in LOCAL_NAMES:
        return True
    address = ip_address(host)  # parsed once (is_loopback would parse it again)
    if address is None:
        return host == listen_host
    return address.is_loopback or address.is_unspecified or address == ip_address(listen_host)


def is_gateway_request(
    host: str, port: int, hosts: tuple[str, ...], listen: tuple[str, int] | None
) -> bool:
    """A request to a gateway hostname, or sent straight to the proxy port (curl localhost:8080).

    `listen` is the address the client connected to (mitmproxy's client_conn.sockname). A Host
    naming this machine with the proxy's port is the proxy itself, however it is spelled:
    forwarding it would make mitmproxy connect to itself, in a loop.
    """
    if host.lower().rstrip(".") in hosts:
        return True
    if not listen or port != listen[1]:
        return False
    return names_this_machine(host, listen[0])


def is_listen_address(
    host: str, port: int, listen_addresses: Iterable[tuple[str, int] | Sequence[Any]]
) -> bool:
    """Whether (host, port) reaches one of the proxy's own listening sockets, however spelled:
    a listener on every interface ("" or 0.0.0.0) is reached by any name of this machine."""
    for listen_host, listen_port, *_ in listen_addresses:
        if port == listen_port and names_this_machine(host, listen_host or "0.0.0.0"):
            return True
    return False
