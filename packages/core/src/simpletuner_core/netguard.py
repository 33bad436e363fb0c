"""Which addresses a non-admin's webhooks may reach: public ones, plus what the operator lists.

A job a non-admin submitted over HTTP must not turn the server into a proxy for the machine's private network
(cloud metadata at 169.254.169.254, services bound to loopback, the LAN). Its webhook hosts are resolved, every
address is checked, and the connection goes to exactly the address that was checked (no second lookup, so a
name cannot re-resolve elsewhere in between). ``SIMPLETUNER_WEBHOOK_ALLOW`` lists exceptions, comma-separated:
host names (matched exactly, case-insensitive: ``hooks.internal``), addresses (``10.0.0.5``, ``::1``) or
networks in CIDR form (``10.0.0.0/8``, ``fd00::/8``). Stdlib only.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

import attrs

ALLOW_ENV = "SIMPLETUNER_WEBHOOK_ALLOW"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``(host, port) -> [(family, sockaddr), ...]``; tests swap in their own to exercise names without DNS.
Resolver = Callable[[str, int], list[tuple[int, Any]]]
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: private in all but name


class BlockedAddress(OSError):
    """A restricted job's webhook host resolves to an address it may not reach."""


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is off limits to restricted jobs (``loopback``, ``private``, …), or None when public."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    for reason, hit in (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                        ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                        ("private", ip.is_private or ip in _SHARED), ("reserved", ip.is_reserved)):
        if hit:
            return reason
    return None


@attrs.frozen
class AllowList:
    """The operator's exceptions (see the module docstring for the format)."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AllowList:
        """Raises ValueError naming the entry that is neither a host name, an address nor a CIDR network."""
        hosts, networks = set(), []
        for entry in (e.strip() for e in text.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if "/" in entry or ":" in entry or not all(part for part in entry.rstrip(".").split(".")):
                raise ValueError(f"{ALLOW_ENV}: {entry!r} is not a host name, an IP address or a CIDR network")
            hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AllowList:
        return cls.parse((os.environ if environ is None else environ).get(ALLOW_ENV, ""))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)


def system_resolve(host: str, port: int) -> list[tuple[int, Any]]:
    return [(family, sockaddr) for family, _, _, _, sockaddr in
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def checked_addresses(host: str, port: int, allow: AllowList,
                      resolve: Resolver = system_resolve) -> list[tuple[int, Any]]:
    """Every address ``host`` resolves to, once; raises :class:`BlockedAddress` when any of them is off limits
    (a name with one private address among public ones is refused whole) unless the operator allowed it."""
    addresses = resolve(host, port)
    if allow.allows_host(host):
        return addresses
    for _, sockaddr in addresses:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        reason = blocked_reason(ip)
        if reason and not allow.allows(ip):
            shown = host if host == str(ip) else f"{host} resolves to {ip}, which"
            raise BlockedAddress(f"{shown} is a {reason} address; webhooks of jobs submitted by non-admins may "
                                 f"only reach public addresses unless an admin lists the host or its network "
                                 f"in {ALLOW_ENV}")
    return addresses


def connect(host: str, port: int, timeout: float | None, allow: AllowList,
            resolve: Resolver = system_resolve) -> socket.socket:
    """A TCP connection to one of the checked addresses of ``host`` (tried in order)."""
    last: OSError | None = None
    for family, sockaddr in checked_addresses(host, port, allow, resolve):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if isinstance(timeout, (int, float)):  # http.client may pass its "default timeout" sentinel
                sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError(f"{host} resolved to no address")
