"""A quiet neighbour's replica renewed by its signer's snapshot (``GossipEngine.renewals``), and a paused solo
peer among finished, serving neighbours (p2pfl.protocol.solo, p2pfl.peer_solo): engines driven by hand,
and the hold on trio's mock clock with a fake loop (no network, no training)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import trio
import trio.testing

from p2pfl.peer_solo import SoloWatch
from p2pfl.protocol import Action, GossipEngine, RequestSnapshot
from p2pfl.protocol.mixing import MixLedger
from p2pfl.protocol.pacing import NeighbourView
from p2pfl.protocol.solo import woken
from p2pfl.wire import Meta
from tests.protocol.test_engine import engine, model

STALE_S = 10.0


def _finished(i: int, rounds: int = 20) -> GossipEngine:
    """A neighbour that published its last version (round ``rounds``) and now only serves it."""
    e = engine(i)
    e.finish_round(model(0.1 * i), 0.0, meta=Meta(round=rounds))
    return e


def _holder(*neighbours: GossipEngine) -> GossipEngine:
    """A peer holding each neighbour's final version since t=0 (a join)."""
    me = engine(9, max_staleness_s=STALE_S, join_quorum=1)
    snaps = {n.peer_id: n.serve_snapshot(0) for n in neighbours}
    assert me.join_from_snapshots(snaps, 0.0) == len(neighbours)
    return me


def _answer(me: GossipEngine, by: dict[str, GossipEngine], actions: Sequence[Action], now: float) -> int:
    """Carry out ``actions``' snapshot requests as the exchange does (the signer answers); how many."""
    asked = 0
    for a in actions:
        if isinstance(a, RequestSnapshot):
            asked += 1
            me.handle_snapshot(by[a.peer].serve_snapshot(0), a.peer, now)
    return asked


# ------------------------------------------------------------------------------------------ the engine


def test_a_served_version_confirmed_by_its_signer_stays_mixable_but_is_no_news() -> None:
    """Regression: staleness counted from a version's arrival only, so a finished neighbour that serves
    its final model left the mix ``max_staleness_s`` later for good (no new version would ever come)."""
    a = _finished(1)
    me = _holder(a)
    assert me.renewals([a.peer_id], STALE_S / 2) == []  # heard of recently: nothing to ask
    assert _answer(me, {a.peer_id: a}, me.renewals([a.peer_id], 8.0), 8.0) == 1
    assert [r.peer for r in me.mixing_candidates(15.0)] == [a.peer_id]  # 7 s after the confirmation
    assert me.replicas[a.peer_id].updated_at == 0.0  # the pacing sees no new version
    assert me.forget_idle(8.0 + 10 * STALE_S - 1) == []  # nor is it forgotten as idle
    assert me.mixing_candidates(8.0 + STALE_S + 0.1) == []  # unconfirmed for max_staleness_s: stale


def test_an_unsolicited_snapshot_confirms_nothing() -> None:
    """Only an answer to our own request renews: a snapshot handed over unasked is no word of its signer
    now (it may be a recording)."""
    a = _finished(1)
    me = _holder(a)
    me.handle_snapshot(a.serve_snapshot(0), a.peer_id, 8.0)
    assert me.mixing_candidates(12.0) == []


def test_renewals_ask_quiet_learners_at_most_every_half_staleness_and_missing_ones_only_when_told() -> None:
    a, b, c = _finished(1), _finished(2), _finished(3)
    me = _holder(a, b)
    by = {e.peer_id: e for e in (a, b, c)}
    peers = list(by)
    assert me.renewals(peers, 6.0) == [RequestSnapshot(peer=p, via=p) for p in (a.peer_id, b.peer_id)]
    assert me.renewals(peers, 6.1) == []  # asked (snapshot_retry_s) and c is not missing-asked
    first = me.renewals([c.peer_id], 6.2, missing=True)
    assert _answer(me, by, first, 6.2) == 1 and me.replicas[c.peer_id].meta.round == 20
    assert me.renewals(peers, 6.3, missing=True) == []
    me.bans.convict(b.peer_id, 7.0, "test")  # an evicted neighbour is never asked
    assert me.renewals([b.peer_id], 20.0) == [] and me.is_evicted(b.peer_id)


def test_a_forgotten_version_comes_back_only_as_its_signer_s_answer_to_our_request() -> None:
    """The replay floor of a forgotten replica refused its own signer's snapshot of that very version, so a
    finished neighbour forgotten once (silent for ``forget_after_s``) never re-entered the mix."""
    a = _finished(1)
    me = _holder(a)
    assert me.forget_idle(10 * STALE_S + 1) == [a.peer_id]
    me.handle_snapshot(a.serve_snapshot(0), a.peer_id, 200.0)  # unasked (a recording, maybe): refused
    assert a.peer_id not in me.replicas
    assert _answer(me, {a.peer_id: a}, me.renewals([a.peer_id], 201.0, missing=True), 201.0) == 1
    assert me.replicas[a.peer_id].seq == a.seq


def test_a_missing_neighbour_that_published_nothing_gives_no_replica() -> None:
    """Its version 0 is the initial model: no version of it to wait for or mix."""
    fresh = engine(4)
    me = _holder()
    assert _answer(me, {fresh.peer_id: fresh}, me.renewals([fresh.peer_id], 1.0, missing=True), 1.0) == 1
    assert fresh.peer_id not in me.replicas
    assert me.renewals([fresh.peer_id], 1.0 + STALE_S / 2 - 0.1, missing=True) == []  # not before half


def test_a_pulled_neighbour_that_published_nothing_gives_no_replica_either() -> None:
    """The round's pull (``wait_before_mix``, p2pfl.protocol.pacing) asks the same way: a lurker's answer,
    its version 0, was taken for a replica, so its initial model was mixed and waited on as a publisher."""
    lurker = engine(4)
    me = _holder()
    assert _answer(me, {lurker.peer_id: lurker}, me.request_snapshots([lurker.peer_id], 1.0), 1.0) == 1
    assert lurker.peer_id not in me.replicas


def _asks(me: GossipEngine, peer: str, start: float, answer: bytes | None) -> list[float]:
    """Renewals called every 0.5 s for 70 s from ``start`` (a round wait's rechecks), each request answered
    at once with ``answer`` (None: never answered); when a request went out."""
    asked = []
    for k in range(140):
        now = start + 0.5 * k
        for a in me.renewals([peer], now):
            if isinstance(a, RequestSnapshot):
                asked.append(now)
                if answer is not None:
                    me.handle_snapshot(answer, peer, now)
    return asked


def test_a_refused_answer_costs_one_request_per_period_not_one_per_recheck() -> None:
    """Regression (review7): a refused answer cleared the pending request, so the next recheck (0.5 s
    later) asked again: a signer serving an older version than the one we hold (it lost its later ones)
    drew a model every 0.5 s for as long as our replica stayed quiet."""
    a = engine(1)
    a.finish_round(model(0.1), 0.0, meta=Meta(round=1))
    older = a.serve_snapshot(0)
    a.finish_round(model(0.2), 1.0, meta=Meta(round=2))
    me = engine(9, join_quorum=1, max_staleness_s=60.0)  # renewals from 30 s, once per 30 s
    assert me.join_from_snapshots({a.peer_id: a.serve_snapshot(0)}, 0.0) == 1
    assert _asks(me, a.peer_id, 31.0, older) == [31.0, 61.0, 91.0]


def test_a_silent_neighbour_has_one_request_per_period_not_one_per_retry() -> None:
    """Regression (review7): an unanswered request was asked again every ``snapshot_retry_s`` (5 s), each
    open up to the 30 s request timeout: six streams held at once by a neighbour that never answers."""
    a = _finished(1)
    me = engine(9, join_quorum=1, max_staleness_s=60.0)
    assert me.join_from_snapshots({a.peer_id: a.serve_snapshot(0)}, 0.0) == 1
    assert _asks(me, a.peer_id, 31.0, None) == [31.0, 61.0, 91.0]


def test_woken_by_a_new_version_or_a_version_mixable_again_that_the_last_mix_did_not_take() -> None:
    held = {"a": 5, "b": 7}
    assert not woken(held, held, {}, {})  # nothing moved, nothing mixable
    assert woken(held, {"a": 6, "b": 7}, {}, {})  # a new version
    assert woken(held, held, {}, {"a": 5})  # a's stale version confirmed again: the solo mix lacked it
    assert not woken(held, held, {"a": 5}, {"a": 5})  # the last mix took it: no news however often confirmed


# -------------------------------------------------------------------------------- the hold, mock clock


def _loop(me: GossipEngine, by: dict[str, GossipEngine], asked: list[float]) -> Any:
    """What :meth:`SoloWatch.hold` uses of the round loop; the exchange answers snapshot requests at once."""
    views = [NeighbourView(p, 0.0, True, None) for p in by]  # connected, subscribed
    loop: Any = SimpleNamespace(_replica_updated=trio.Event(), _ledger=MixLedger(), _views=lambda _now: views)

    async def execute(actions: Sequence[Action]) -> None:
        asked.extend(trio.current_time() for a in actions if isinstance(a, RequestSnapshot))
        if _answer(me, by, actions, trio.current_time()):
            loop._replica_updated.set()

    loop._p = SimpleNamespace(stopped=trio.Event(), engine=me, exchange=SimpleNamespace(execute=execute))
    loop._held_at_mix = {p: r.seq for p, r in me.replicas.items()}
    return loop


def _hold(watch: SoloWatch, loop: Any, start: float, limit: float) -> float:
    """Run the hold from ``start`` (mock time) for at most ``limit`` s; returns when it ended (inf: not)."""
    ended = [math.inf]

    async def main() -> None:
        await trio.sleep_until(start)
        with trio.move_on_after(limit):
            await watch.hold(loop)
            ended[0] = trio.current_time()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return ended[0]


def test_a_paused_peer_among_serving_neighbours_resumes_on_their_served_versions() -> None:
    """Regression: paused after solo rounds (its replicas of two finished neighbours had gone stale), it
    waited for a new version that finished neighbours never publish: for ever (here 1000 s), though both
    were connected and served models its mixes lacked. Now it asks them, and their answers wake it."""
    a, b = _finished(1), _finished(2)
    me = _holder(a, b)
    watch = SoloWatch(pause_after=1)
    watch.tracker.observe(0)  # a solo round: paused
    assert me.mixing_candidates(30.0) == []
    asked: list[float] = []
    ended = _hold(watch, _loop(me, {a.peer_id: a, b.peer_id: b}, asked), 30.0, 1000.0)
    assert ended < 32.0, ended
    assert {r.peer for r in me.mixing_candidates(ended)} == {a.peer_id, b.peer_id}


def test_a_confirmation_wakes_a_paused_peer_once_not_per_answer() -> None:
    """What a neighbour (or anyone) can do with renewals: its confirmed version woke the peer, whose round
    took it and stayed solo (e.g. the scorer gave it no weight). Confirming the same version again and again
    is no news: the peer stays paused, asking at most once per half ``max_staleness_s``."""
    a = _finished(1)
    me = _holder(a)
    watch = SoloWatch(pause_after=1)
    watch.tracker.observe(0)
    asked: list[float] = []
    loop = _loop(me, {a.peer_id: a}, asked)
    assert _hold(watch, loop, 30.0, 100.0) < 32.0
    loop._ledger.record((r.peer, r.seq) for r in me.mixing_candidates(30.0))  # the round took it ...
    watch.tracker.observe(0)  # ... and was solo again: still paused
    asked.clear()
    assert _hold(watch, loop, 0.0, 1000.0) == math.inf
    assert 0 < len(asked) <= 1000.0 / (STALE_S / 2) + 1, asked


def test_a_new_version_of_a_served_neighbour_is_applied_from_the_answer() -> None:
    """A neighbour whose delta gossip lost answers with its newer version: that wakes the peer too."""
    a = _finished(1)
    me = _holder(a)
    a.finish_round(model(0.5), 1.0, meta=Meta(round=21))  # published, never delivered to us
    watch = SoloWatch(pause_after=1)
    watch.tracker.observe(0)
    ended = _hold(watch, _loop(me, {a.peer_id: a}, []), 30.0, 1000.0)
    assert ended < 32.0 and me.replicas[a.peer_id].seq == 2
    np.testing.assert_allclose(me.replicas[a.peer_id].vec, a.public)
