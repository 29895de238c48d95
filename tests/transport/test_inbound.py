"""The admission policy of inbound connections (pure: a fake clock)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.errors import ConfigError, P2PFLError
from p2pfl.transport.inbound import InboundGate, InboundLimits, source_key


def test_sources_are_ipv4_addresses_and_ipv6_slash_64s_and_loopback_is_none() -> None:
    assert source_key("203.0.113.7") == "203.0.113.7"
    assert source_key("2001:db8:1:2::5") == source_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::5") != source_key("2001:db8:1:2::5")
    assert source_key("::ffff:203.0.113.7") == "203.0.113.7"  # a mapped address is its IPv4 one
    assert source_key("fe80::1%eth0") == "fe80::1%eth0"  # link-local: every link shares fe80::/64
    assert source_key("fe80::1%eth0") != source_key("fe80::2%eth0")
    assert source_key("") is None  # unknown (unreadable socket): not one shared bucket
    for loop in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        assert source_key(loop) is None
    assert source_key("not an address") == "not an address"


def test_a_source_gets_its_burst_then_its_rate() -> None:
    gate = InboundGate(InboundLimits(rate=2.0, burst=5, handshakes=100))
    admitted = [gate.admit("198.51.100.1", 0.0) for _ in range(8)]
    assert admitted == [None] * 5 + ["inbound_rate"] * 3
    for _ in range(5):
        gate.done("198.51.100.1")
    assert gate.admit("198.51.100.1", 0.4) == "inbound_rate"  # 0.8 of a token
    assert gate.admit("198.51.100.1", 0.5) is None
    assert gate.admit("198.51.100.2", 0.5) is None  # another source has its own bucket


def test_handshakes_in_flight_are_bounded_per_source_and_freed_when_done() -> None:
    gate = InboundGate(InboundLimits(rate=100.0, burst=100, handshakes=2))
    assert gate.admit("198.51.100.1", 0.0) is None
    assert gate.admit("198.51.100.1", 0.0) is None
    assert gate.admit("198.51.100.1", 0.0) == "inbound_handshakes"
    assert gate.handshaking("198.51.100.1") == 2
    assert gate.admit("198.51.100.9", 0.0) is None
    gate.done("198.51.100.1")
    assert gate.admit("198.51.100.1", 0.0) is None
    # a refused connection spent no token: the refusals above left the bucket at 100 - 3
    gate.done("198.51.100.1")
    gate.done("198.51.100.1")
    assert gate.handshaking("198.51.100.1") == 0
    assert [gate.admit("198.51.100.1", 0.0) for _ in range(2)] == [None, None]


def test_an_ipv6_host_cannot_escape_its_limit_by_changing_address_within_its_slash_64() -> None:
    gate = InboundGate(InboundLimits(rate=0.001, burst=3, handshakes=100))
    results = [gate.admit(f"2001:db8:aa:bb::{i:x}", 0.0) for i in range(1, 6)]
    assert results == [None, None, None, "inbound_rate", "inbound_rate"]


def test_loopback_is_exempt_unless_asked() -> None:
    tight = InboundLimits(rate=0.001, burst=1, handshakes=1)
    gate = InboundGate(tight)
    assert all(gate.admit("127.0.0.1", 0.0) is None for _ in range(50))
    assert gate.handshaking("127.0.0.1") == 0
    limited = InboundGate(InboundLimits(rate=0.001, burst=1, handshakes=1, loopback=True))
    assert limited.admit("127.0.0.1", 0.0) is None
    assert limited.admit("127.0.0.1", 0.0) == "inbound_handshakes"
    limited.done("127.0.0.1")
    assert limited.admit("127.0.0.1", 0.0) == "inbound_rate"


def test_the_source_table_stays_bounded_under_many_sources() -> None:
    gate = InboundGate(InboundLimits(rate=1.0, burst=2, handshakes=4, max_sources=64))
    for i in range(5000):
        host = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        assert gate.admit(host, float(i)) is None
        gate.done(host)
        assert len(gate) <= 64
    assert gate.handshaking("10.0.19.135") == 0


@pytest.mark.parametrize(
    "limits",
    [
        {"rate": 0.0},
        {"rate": -1.0},
        {"burst": 0.5},
        {"handshakes": 0},
        {"max_sources": 0},
    ],
)
def test_nonsense_limits_are_refused(limits: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        InboundLimits(**limits)  # type: ignore[arg-type]
    assert issubclass(ConfigError, P2PFLError)


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(0.1, 20.0),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=200),
)
def test_admissions_never_exceed_the_burst_plus_the_rate_over_the_time(
    rate: float, burst: int, gaps: list[float]
) -> None:
    """Whatever an attacker's timing, one source starts at most ``burst + rate * elapsed`` handshakes."""
    gate = InboundGate(InboundLimits(rate=rate, burst=burst, handshakes=10_000))
    now, admitted = 0.0, 0
    for gap in gaps:
        now += gap
        if gate.admit("203.0.113.50", now) is None:
            admitted += 1
            gate.done("203.0.113.50")
        assert admitted <= burst + rate * now + 1e-9
