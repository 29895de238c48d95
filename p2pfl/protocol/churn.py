"""Bounded per-identity state under identity churn: what a long-lived peer keeps of identities gone quiet.

Every table keyed by a peer id grows with the identities a peer ever hears of unless something drops the
entries; an attacker who signs with a new key every round would otherwise grow a long-lived peer's memory
without bound. The replicas are forgotten after ``[protocol] forget_after_s`` without a new version
(:mod:`p2pfl.protocol.idle`); this module extends the same discipline to the other tables, at the same
moment (each round, and periodically while a finished peer only serves: :mod:`p2pfl.peer_serve`):

* an identity is *live* while the engine holds its replica, buffers its deltas, fetches its payload or
  wants its snapshot (a want or fetch unanswered past the horizon expires: :func:`expire_requests`), or
  is a founder by contact that has not published yet (``EngineCore.note_contacts``; for the horizon from
  its first contact, however long it stays connected). Once
  it is none of these (its replica was forgotten, or it was evicted and its replica dropped), its
  per-identity state is either forgotten or remembered:
* **forgotten** when its record is no worse than a new identity's: the scorer's state (reputation, standing,
  founder flag, echo/heading/persistence history), the round table's ``_heard_at``, ``_last_scored`` and
  ``_doubted``, and its ban count. If it comes back it is a new identity: young, not a founder, with the
  return grace every late joiner gets. So a forgotten identity never gets *more* than a new one (a founder
  that stayed away past the horizon re-earns its weight, as any newcomer does);
* **remembered** when its record is worse than a new identity's (:func:`worse_than_new`: evicted, banned
  or convicted, on probation, excluded, or holding bad evidence or absurd models): going quiet must not
  launder it, and it keeps none of the privileges a new one lacks (:func:`shed_privileges`). At most
  ``MAX_REMEMBERED`` such identities are kept, the longest quiet dropped first (then forgotten as above: an
  attacker must burn that many bad identities to flush one, and the flushed one gets what a new one gets).
  A flushed identity with a ban record is handed to the transport as a
  :class:`~p2pfl.protocol.actions.Forget` (by the next ``readmissions``), which unblocks it: the transport's
  block list is bounded by the engine's, not by every identity ever evicted.

Tables bounded by other means: the per-sender/relay/publisher rate-limit buckets (at most ``max_keys``
each, and a bucket that has refilled is dropped here: a full bucket and a missing one are the same, a new
key starts full), ``rejections_by_peer`` (the ``MAX_REJECTING`` most recently rejected identities; the
totals per reason are kept in ``rejections``), the replay floors (:class:`~p2pfl.protocol.idle.
ForgottenBook`), the equivocation headers and proofs (:mod:`p2pfl.protocol.equivocation`).

Bound, for an attacker that rotates identities (each publishes, then goes quiet): at most
``forget_after_s / period`` live identities (``period``: the time between two new identities reaching the
peer) plus the honest neighbours, plus ``MAX_REMEMBERED`` remembered ones in the scorer and the ban book.
Pure: the caller passes ``now``; tests drive it with a fake clock (tests/protocol/test_churn.py).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import TYPE_CHECKING

from p2pfl.protocol.idle import FORGET_STALENESS_FACTOR

if TYPE_CHECKING:
    from p2pfl.protocol.core import EngineCore

#: identities gone quiet with a record worse than a new one's, kept (oldest quiet dropped first)
MAX_REMEMBERED = 4096
#: identities whose rejection counts are kept per peer (least recently rejected dropped first)
MAX_REJECTING = 1024


def worse_than_new(engine: EngineCore, peer: str) -> bool:
    """Whether ``peer``'s record is worse than a new identity's, so forgetting it would launder it."""
    if engine.bans.evictions_of(peer) > 0 or engine.bans.convicted(peer) is not None:
        return True
    scorer = engine.scorer
    state = scorer.state_of(peer) if scorer is not None else None
    if state is None:
        return False
    return (
        state.status != "active"
        or state.absurd > 0
        or state.consecutive_bad > 0
        or state.bad_evidence > 0.0
        or state.jumped
    )


def live_identities(engine: EngineCore) -> set[str]:
    """The identities the engine is working with now (module docstring)."""
    return (
        set(engine.replicas)
        | set(engine._pending)
        | set(engine._fetching_for)
        | set(engine._snapshot_wanted)
        | set(engine._contacts)
    )


def known_identities(engine: EngineCore) -> set[str]:
    """Every identity some per-identity table of the engine holds state for (rejection counts aside)."""
    known = set(engine._heard_at) | set(engine._last_scored) | engine._doubted | engine.bans.peers()
    known.update(engine._contacts)
    if engine.scorer is not None:
        known.update(engine.scorer.known())
    return known


class QuietBook:
    """The identities gone quiet whose record is remembered (worse than new), longest quiet first."""

    def __init__(self, capacity: int = MAX_REMEMBERED) -> None:
        self.capacity = capacity
        self._quiet: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, peer: object) -> bool:
        return peer in self._quiet

    def __len__(self) -> int:
        return len(self._quiet)

    def add(self, peer: str, now: float) -> list[str]:
        """Remember ``peer`` as quiet since ``now``; returns the identities dropped past the capacity."""
        self._quiet.setdefault(peer, now)
        dropped = []
        while len(self._quiet) > self.capacity:
            dropped.append(self._quiet.popitem(last=False)[0])
        return dropped

    def discard(self, peer: str) -> None:
        self._quiet.pop(peer, None)

    def peers(self) -> list[str]:
        return list(self._quiet)


def shed_privileges(engine: EngineCore, peer: str) -> None:
    """Keep of a remembered record only what is worse than a new identity's: a founder's or an established
    identity's standing, its earned passes and a reputation above the initial one go (its penalties stay).
    "Worse than new" is one field, not the whole record: without this a founder that sent one bad version
    before going quiet came back a founder at full weight, which a founder with a clean record does not."""
    scorer = engine.scorer
    state = scorer.state_of(peer) if scorer is not None else None
    if scorer is None or state is None:
        return
    cfg = scorer.config
    if not (cfg.young_rounds == 0 or scorer.rounds <= cfg.founding_rounds):  # a new one would be young
        state.founder = state.established = False
        state.passes = 0
    state.reputation = min(state.reputation, cfg.initial_reputation)


def forget_identity(engine: EngineCore, peer: str) -> None:
    """Drop everything the engine keeps about ``peer`` outside its (already forgotten) replica."""
    if engine.scorer is not None:
        engine.scorer.forget(peer)
    engine._heard_at.pop(peer, None)
    engine._last_scored.pop(peer, None)
    engine._doubted.discard(peer)
    engine._contacts.pop(peer, None)
    engine.bans.forget(peer)
    engine.quiet.discard(peer)


def expire_requests(engine: EngineCore, now: float) -> None:
    """Drop the snapshot wants and payload fetches older than the forgetting horizon (never younger than
    ``snapshot_retry_s``, the only age they are compared with, so no retry changes), and the deltas buffered
    for a snapshot of a peer we hold no replica of and no longer want one from. Without this an identity
    that sent a delta with a gap and never answered stayed live for ever, its buffered payloads with it."""
    cfg = engine.config
    horizon = cfg.forget_after_s
    if horizon is None:
        horizon = FORGET_STALENESS_FACTOR * cfg.max_staleness_s
    age = max(horizon, cfg.snapshot_retry_s)
    for peer in [p for p, asked in engine._snapshot_wanted.items() if now - asked > age]:
        del engine._snapshot_wanted[peer]
    for peer in [p for p, asked in engine._renewal_asked.items() if now - asked > age]:
        del engine._renewal_asked[peer]
    for peer in [p for p, asked in engine._pulled.items() if now - asked > age]:
        del engine._pulled[peer]
    for peer in [p for p, seen in engine._contacts.items() if now - seen > age]:
        del engine._contacts[peer]  # silent past the horizon since its first contact, connected or not
    for peer in [p for p, (_seq, at) in engine._fetching_for.items() if now - at > age]:
        del engine._fetching_for[peer]
    for digest in [d for d, at in engine._fetching.items() if now - at > age]:
        del engine._fetching[digest]
    for peer in [p for p in engine._pending if p not in engine.replicas and p not in engine._snapshot_wanted]:
        del engine._pending[peer]


def prune_identities(engine: EngineCore, now: float) -> list[str]:
    """Forget or remember every identity that is no longer live (module docstring) and drop refilled rate
    buckets; returns the identities forgotten. Called with :meth:`EngineCore.forget_idle`."""
    expire_requests(engine, now)
    live = live_identities(engine)
    quiet = engine.quiet
    for peer in [p for p in quiet.peers() if p in live]:
        quiet.discard(peer)  # back: its remembered record is live again
    forgotten: list[str] = []
    for peer in sorted(known_identities(engine) - live):
        if peer in quiet:
            continue
        if worse_than_new(engine, peer):
            shed_privileges(engine, peer)
            for dropped in quiet.add(peer, now):
                forget_identity(engine, dropped)
                forgotten.append(dropped)
        else:
            forget_identity(engine, peer)
            forgotten.append(peer)
    for buckets in (engine.rates.relay, engine.rates.sender, engine.rates.proof, engine.rates.publisher):
        buckets.prune(now)
    return forgotten


def count_rejection(
    table: dict[str, Counter[str]], peer: str, reason: str, capacity: int = MAX_REJECTING
) -> None:
    """Count a rejection against ``peer`` in ``table`` (an ``OrderedDict``: least recently rejected dropped
    past ``capacity``)."""
    counts = table.pop(peer, None) or Counter()
    counts[reason] += 1
    table[peer] = counts  # (re-inserted last: the most recently rejected)
    while len(table) > capacity:
        del table[next(iter(table))]


def identity_tables(engine: EngineCore) -> dict[str, int]:
    """The size of every per-identity table of ``engine`` (tests, status and the bound's documentation)."""
    sizes = {
        "replicas": len(engine.replicas),
        "replay_floors": len(engine.forgotten),
        "heard_at": len(engine._heard_at),
        "contacts": len(engine._contacts),
        "last_scored": len(engine._last_scored),
        "doubted": len(engine._doubted),
        "bans": len(engine.bans.peers()),
        "quiet": len(engine.quiet),
        "rejections_by_peer": len(engine.rejections_by_peer),
        "headers": len(engine.headers),
        "rate_relay": len(engine.rates.relay),
        "rate_sender": len(engine.rates.sender),
        "rate_proof": len(engine.rates.proof),
        "rate_publisher": len(engine.rates.publisher),
    }
    if engine.scorer is not None:
        sizes["scorer"] = len(engine.scorer.known())
        sizes["scorer_history"] = engine.scorer.history_size()
    return sizes
