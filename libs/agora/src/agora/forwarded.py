"""Who is really calling: the client's address and scheme behind trusted proxies.

A process believes ``X-Forwarded-For`` and ``X-Forwarded-Proto`` only when the peer that sent them
is one of the proxies its settings name (``trusted_proxies``: addresses or networks). Then the
client is the right-most address of the chain that is not itself a trusted proxy: every hop
appends the address it saw, so entries to the left of the last untrusted one may have been
written by the client and are ignored. With no trusted proxy (the gateway's default, since it is
the public door) the forwarded headers count for nothing and the peer is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

FORWARDED_FOR = b"x-forwarded-for"
FORWARDED_PROTO = b"x-forwarded-proto"


@dataclass(frozen=True, slots=True)
class Client:
    """The caller as the edge of the trusted network saw it."""

    address: str
    scheme: str


class TrustedProxies:
    """The proxies whose forwarded headers this process believes."""

    __slots__ = ("_networks",)

    def __init__(self, proxies: Iterable[str]) -> None:
        self._networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(proxy.strip(), strict=False) for proxy in proxies if proxy.strip()
        )

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def client(self, scope: Mapping[str, Any] | MutableMapping[str, Any]) -> Client:
        """The client of an ASGI ``scope``."""
        peer = scope.get("client")
        address = peer[0] if peer else ""
        scheme = str(scope.get("scheme", "http"))
        if not self._networks or not self.trusts(address):
            return Client(address, scheme)
        chain: list[str] = []
        proto = ""
        for name, value in scope.get("headers", ()):
            if name == FORWARDED_FOR:
                chain.extend(part.strip() for part in value.decode("latin-1").split(","))
            elif name == FORWARDED_PROTO:
                # The nearest proxy's word is the one that counts: it saw the connection.
                proto = value.decode("latin-1").split(",")[-1].strip().lower()
        for hop in reversed([hop for hop in chain if hop]):
            if not self.trusts(hop):
                address = hop
                break
        else:
            if chain and chain[0]:
                address = chain[0]
        if proto in ("http", "https"):
            scheme = proto
        return Client(address, scheme)
