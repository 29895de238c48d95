"""Admission of inbound connections before their handshake (pure: time is passed in).

Every inbound TCP connection costs the listener a Noise handshake (Diffie-Hellman, a signature check) and,
until it completes or times out, one of the host's inbound slots. A dialler pays the same handshake, but a
hostile one can open sockets and stay silent, or connect and leave in a loop, for much less than it costs
us. So, keyed by *source* (an IPv4 address, or an IPv6 /64, since one host owns a whole /64):

- a token bucket bounds the *rate* of new inbound connections a source may start;
- a count bounds the handshakes a source may have *in flight* at once, so silent sockets from one source
  cannot hold the host's inbound slots for the handshake timeout.

Honest peers dial a neighbour once and keep the link: a rotating peer (:mod:`p2pfl.protocol.rotation`)
dials a few links per round, an organisation behind one NAT address a few times that. Loopback sources are
admitted without limit by default: they are the machine's own processes (a simulation runs every peer on
127.0.0.1), never a remote attacker.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from p2pfl.errors import ConfigError
from p2pfl.tokenbucket import Buckets

__all__ = ["InboundGate", "InboundLimits", "source_key"]


@dataclass(frozen=True)
class InboundLimits:
    """``rate`` new inbound connections per second per source, up to ``burst`` at once; at most
    ``handshakes`` of them handshaking at a time; ``max_sources`` sources remembered (least recently seen
    forgotten, which refills them: the table cannot grow without bound); ``loopback`` limited too."""

    rate: float = 4.0
    burst: float = 64.0
    handshakes: int = 8
    max_sources: int = 4096
    loopback: bool = False

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.burst >= 1 and self.handshakes >= 1 and self.max_sources >= 1):
            raise ConfigError(
                "inbound limits need rate > 0, burst >= 1, handshakes >= 1 and max_sources >= 1, got "
                f"{self.rate!r}, {self.burst!r}, {self.handshakes!r}, {self.max_sources!r}"
            )


def source_key(host: str) -> str | None:
    """The key a remote address is limited under: the IPv4 address, the IPv6 /64 (an IPv4-mapped IPv6
    address counts as its IPv4 address; a link-local one is its own key, scope included: every link's
    hosts share fe80::/64); ``None`` for loopback and for an unknown address ("": the transport could not
    read it, which a remote cannot cause). An unparsable host is its own key."""
    if not host:
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_link_local:
            return host
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class InboundGate:
    """Decides, per new inbound connection, whether its handshake may start.

    ``admit`` at accept time returns ``None`` (admitted: the caller must call ``done`` with the same host
    once the handshake has ended, however it ended) or the reason it was refused (``"inbound_rate"``, a
    source past its rate; ``"inbound_handshakes"``, a source with too many handshakes in flight). A refused
    connection spends nothing."""

    def __init__(self, limits: InboundLimits | None = None) -> None:
        self.limits = limits or InboundLimits()
        self._buckets = Buckets(self.limits.rate, self.limits.burst, self.limits.max_sources)
        self._handshaking: dict[str, int] = {}

    def _key(self, host: str) -> str | None:
        key = source_key(host)
        if key is None and self.limits.loopback:
            return host
        return key

    def admit(self, host: str, now: float) -> str | None:
        key = self._key(host)
        if key is None:
            return None
        if self._handshaking.get(key, 0) >= self.limits.handshakes:
            return "inbound_handshakes"
        if not self._buckets.take(key, now):
            return "inbound_rate"
        self._handshaking[key] = self._handshaking.get(key, 0) + 1
        return None

    def done(self, host: str) -> None:
        """The handshake of a connection ``admit`` let in has ended."""
        key = self._key(host)
        if key is None:
            return
        left = self._handshaking.get(key, 0) - 1
        if left > 0:
            self._handshaking[key] = left
        else:
            self._handshaking.pop(key, None)

    def handshaking(self, host: str) -> int:
        """Handshakes in flight from ``host``'s source."""
        key = self._key(host)
        return 0 if key is None else self._handshaking.get(key, 0)

    def __len__(self) -> int:
        """Sources remembered (at most ``limits.max_sources``)."""
        return len(self._buckets)
