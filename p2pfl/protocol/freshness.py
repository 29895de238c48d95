"""Freshness of a gossiped version: its signed timestamp must be recent, by the receiver's wall clock.

Why. The per-identity replay floors (``seq`` not newer than the replica, or than a forgotten replica's last
version: :mod:`p2pfl.protocol.idle`) exist only for identities the receiver holds or still remembers. For an
identity it never held, or forgot past the floors' bound (an attacker can flush them by making it forget
4096 other identities), nothing said that an old, validly signed version was old: anyone who recorded a
peer's first versions could replay them, hours later, to such a receiver. A version 1 applies to the common
initial model without a replica, the next ones chain on it, and the replica counted as fresh from its
*arrival*: the old model entered the mix (as a founder, at full weight, if the receiver was in its founding
rounds), or, when it was far from the network's current models, collected bad scores until the honest
signer was evicted (tests/protocol/test_replay_attack.py measured both on the code before this rule). A
flood of such replays also spent the signer's rate-limit tokens, so its fresh versions were dropped.

The rule. A delta announced by gossip is accepted only if its signed ``ts`` (milliseconds since the Unix
epoch, by the signer's clock) is in ``[wall - max_version_age_s, wall + max_clock_skew_s]``, where ``wall``
is the receiver's clock when the message arrives. Refused as ``stale_timestamp`` (older) or
``future_timestamp`` (newer), before the signature is verified (an integer comparison: a flood of old
replays costs no verify and no token of the signer's bucket), counted against the forwarder that delivered
it: the signer signed it honestly when it was fresh, the peer that hands it over now is the replayer. Total:
every ``ts`` (0 to 2^64 - 1) ends in accepted or one of the two reasons.

Bounds. The skew is between the signer's clock and the receiver's (pairwise, not against true time:
each clock within half of it of true time keeps every pair within it). An honest signer whose clock
differs from the receiver's by at most ``max_clock_skew_s`` is accepted when its message
arrives within ``max_version_age_s - max_clock_skew_s`` of being signed (so the age must exceed the skew);
a replay is accepted at most ``max_version_age_s + max_clock_skew_s`` after the signing. No timestamp is
remembered: a version refused as from the future leaves no floor behind, and the signer's later versions
(an earlier ``ts`` once its clock is fixed) are judged on their own.

What is exempt, and why: snapshots (fetched over an authenticated stream from their signer itself, which
vouches for them now; a finished peer serves its final model, signed once and cached, for days),
payloads fetched by digest (their header was judged when it was announced) and the deltas buffered while a
snapshot was on its way (judged on arrival), and equivocation proofs (two signed headers prove a fault
whatever their age). Pure: the caller passes the wall clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable

STALE_TIMESTAMP = "stale_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"

#: The defaults (seconds). Peers are organisations' machines with NTP (offsets of milliseconds); 60 s
#: of skew between two clocks tolerates one whose NTP failed a week or two ago (quartz drifts 1-4 s a
#: day). Gossip delivers a version within seconds (gossipsub forwards from a 5 s history), so 300 s
#: leaves an honest version four minutes of delivery delay at the largest skew, while a replay can
#: bring back only a version signed at most six minutes earlier: a model a round or so behind its
#: signer's, never one from hours ago.
MAX_VERSION_AGE_S = 300.0
MAX_CLOCK_SKEW_S = 60.0


#: a bound this long (ms) or longer is no bound: every ``ts`` is a u64 of ms, and ``math.ceil`` of an
#: overflowed product (1e306 s * 1000 = inf) would raise on every message
_NO_BOUND_MS = 2**64


def _bound_ms(seconds: float, rounding: Callable[[float], int]) -> int | None:
    """``seconds`` in whole ms (rounded by ``rounding``), or None when it is no bound at all."""
    ms = seconds * 1000
    if not math.isfinite(ms) or ms >= _NO_BOUND_MS:
        return None
    return rounding(ms)


def timestamp_error(ts_ms: int, wall_ms: int, max_age_s: float, max_skew_s: float) -> str | None:
    """Why a version signed at ``ts_ms`` must be refused at ``wall_ms`` (both ms since the epoch), or None.

    The window's ends are included. ``max_age_s`` may be ``inf`` (no age limit), and any bound too long to
    matter (2^64 ms or more) is none; integer arithmetic, so no timestamp rounds into the window."""
    age = _bound_ms(max_age_s, math.ceil)
    if age is not None and ts_ms < wall_ms - age:
        return STALE_TIMESTAMP
    skew = _bound_ms(max_skew_s, math.floor)
    if skew is not None and ts_ms > wall_ms + skew:
        return FUTURE_TIMESTAMP
    return None
