"""The join's schedule, step by step on a clock the test chooses."""

from __future__ import annotations

import numpy as np

from p2pfl.identity import Identity
from p2pfl.protocol import GossipEngine, ProtocolConfig, Wait
from p2pfl.protocol.join import AskSnapshots, Finish, JoinPlan
from tests.protocol.test_engine import engine, model


def plan(**kw: object) -> JoinPlan:
    args: dict[str, object] = {
        "quorum": 2,
        "timeout_s": 10.0,
        "request_timeout_s": 30.0,
        "adopt": True,
        "started_at": 0.0,
    }
    args.update(kw)
    return JoinPlan(**args)  # type: ignore[arg-type]


def test_everyone_answers_at_once() -> None:
    p = plan()
    assert p.next(0.0, ["a", "b", "c"], set(), usable=set()) == AskSnapshots(("a", "b", "c"), 10.0)
    assert p.next(0.5, ["a", "b", "c"], {"a", "b", "c"}, usable={"a", "b", "c"}) == Finish()


def test_no_neighbour_nothing_to_ask() -> None:
    assert plan().next(0.0, [], set(), usable=set()) == Finish()


def test_the_request_timeout_bounds_each_request() -> None:
    assert plan(timeout_s=60.0, request_timeout_s=5.0).next(0.0, ["a"], set(), usable=set()) == AskSnapshots(
        ("a",), 5.0
    )


def test_silent_peers_are_asked_again_after_a_pause_up_to_three_attempts() -> None:
    p = plan(quorum=3)
    assert p.next(0.0, ["a", "b", "c"], set(), usable=set()) == AskSnapshots(("a", "b", "c"), 10.0)
    assert p.next(2.0, ["a", "b", "c"], {"a"}, usable={"a"}) == Wait(
        3.0
    )  # below quorum: ask b and c again at 3.0
    assert p.next(2.5, ["a", "b", "c", "d"], {"a"}, usable={"a"}) == Wait(3.0)
    assert p.next(3.0, ["a", "b", "c", "d"], {"a"}, usable={"a"}) == AskSnapshots(
        ("b", "c"), 10.0
    )  # chosen before the pause
    assert p.next(4.0, ["a", "b", "c"], {"a"}, usable={"a"}) == Wait(5.0)
    assert p.next(5.0, ["a", "b", "c"], {"a"}, usable={"a"}) == AskSnapshots(("b", "c"), 10.0)
    assert p.next(6.0, ["a", "b", "c"], {"a"}, usable={"a"}) == Finish()  # three attempts made


def test_a_peer_asked_but_disconnected_meanwhile_is_asked_again() -> None:
    """A resync closes the connection the request went over and redials: the peer is not connected for a
    moment. The join used to look only at that moment's connections and end with nothing from it."""
    p = plan(quorum=2)
    assert p.next(0.0, ["a", "b"], set(), usable=set()) == AskSnapshots(("a", "b"), 10.0)
    assert p.next(1.0, ["a"], {"a"}, usable={"a"}) == Wait(2.0)  # b's request was lost with its connection
    assert p.next(2.0, ["a", "b"], {"a"}, usable={"a"}) == AskSnapshots(("b",), 10.0)
    assert p.next(3.0, ["a", "b"], {"a", "b"}, usable={"a", "b"}) == Finish()


def test_a_quorum_after_the_first_attempt_ends_the_join() -> None:
    p = plan(quorum=2)
    p.next(0.0, ["a", "b", "c"], set(), usable=set())
    assert p.next(1.0, ["a", "b", "c"], {"a", "b"}, usable={"a", "b"}) == Finish()  # c is not waited for


def test_the_first_attempt_asks_everyone_even_with_a_quorum_known() -> None:
    p = plan(quorum=1)
    assert p.next(0.0, ["a", "b"], {"a"}, usable={"a"}) == AskSnapshots(("b",), 10.0)


def test_the_join_ends_at_its_timeout() -> None:
    p = plan(timeout_s=2.5)
    p.next(0.0, ["a", "b"], set(), usable=set())
    assert p.next(2.0, ["a", "b"], set(), usable=set()) == Wait(2.5)  # the pause is cut short by the deadline
    assert p.next(2.5, ["a", "b"], set(), usable=set()) == Finish()


def test_the_own_model_changes_only_with_a_quorum_of_usable_snapshots() -> None:
    p = plan(quorum=2)
    assert not p.apply(1)
    assert p.apply(2) and p.apply(3)


def test_an_unusable_snapshot_does_not_count_towards_the_quorum() -> None:
    """A same-network learner whose snapshot the engine refuses (wrong_arch, bad signature, absurd) answered,
    but must not end the join before a learner whose request was lost (a resync) is asked again: with it
    counted, the join ended below the quorum of usable snapshots and the peer started from its own model."""
    p = plan(quorum=2)
    assert p.next(0.0, ["a", "w", "b"], set(), usable=set()) == AskSnapshots(("a", "w", "b"), 10.0)
    # a's snapshot is usable, w's is refused, b's request was lost with its connection
    assert p.next(1.0, ["a", "w", "b"], {"a", "w"}, usable={"a"}) == Wait(2.0)
    assert p.next(2.0, ["a", "w", "b"], {"a", "w"}, usable={"a"}) == AskSnapshots(("b",), 10.0)  # not w
    assert p.next(3.0, ["a", "w", "b"], {"a", "w", "b"}, usable={"a", "b"}) == Finish()


def test_refused_snapshots_still_end_the_join_within_its_attempts() -> None:
    """Every learner answered, none usably: nobody is left to ask, so the join ends (and keeps its model)."""
    p = plan(quorum=2)
    p.next(0.0, ["a", "w"], set(), usable=set())
    assert p.next(1.0, ["a", "w"], {"a", "w"}, usable=set()) == Finish()
    p = plan(quorum=2)
    p.next(0.0, ["a", "b"], set(), usable=set())
    for t in (1.0, 2.0, 3.0, 4.0):  # b is silent, a unusable: asked again twice, then the attempts are spent
        p.next(t, ["a", "b"], {"a"}, usable=set())
    assert p.attempt == 3
    assert p.next(5.0, ["a", "b"], {"a"}, usable=set()) == Finish()


def test_usable_snapshots_are_those_the_join_would_use_without_counting_a_rejection() -> None:
    """The join counts towards its quorum only the snapshots :meth:`join_from_snapshots` would use; telling
    which is side-effect free (the join itself counts the rejections, once)."""
    good, far, signer = engine(1), engine(2), engine(3)
    for e, v in ((good, 1.0), (far, -1e30), (signer, 1.0)):
        e.finish_round(model(v), 1)
    odd = GossipEngine(
        Identity(bytes([4]) * 32), ProtocolConfig(network_id="t"), {"z": np.zeros(2, np.float32)}
    )
    odd.finish_round({"z": np.ones(2, np.float32)}, 1)
    forged = bytearray(signer.serve_snapshot(0))
    forged[40] ^= 1
    newcomer = engine(9, join_quorum=2)
    snaps = {
        good.peer_id: good.serve_snapshot(0),
        far.peer_id: far.serve_snapshot(0),  # absurd
        odd.peer_id: odd.serve_snapshot(0),  # wrong_arch
        signer.peer_id: bytes(forged),  # bad signature
    }
    assert {good.peer_id} == newcomer.usable_snapshots(snaps)
    assert {} == newcomer.rejections_by_peer and {} == newcomer.replicas
    assert 1 == newcomer.join_from_snapshots(snaps, 0)
