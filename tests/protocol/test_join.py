"""The join's schedule, step by step on a clock the test chooses."""

from __future__ import annotations

from p2pfl.protocol import Wait
from p2pfl.protocol.join import AskSnapshots, Finish, JoinPlan


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
    assert p.next(0.0, ["a", "b", "c"], set()) == AskSnapshots(("a", "b", "c"), 10.0)
    assert p.next(0.5, ["a", "b", "c"], {"a", "b", "c"}) == Finish()


def test_no_neighbour_nothing_to_ask() -> None:
    assert plan().next(0.0, [], set()) == Finish()


def test_the_request_timeout_bounds_each_request() -> None:
    assert plan(timeout_s=60.0, request_timeout_s=5.0).next(0.0, ["a"], set()) == AskSnapshots(("a",), 5.0)


def test_silent_peers_are_asked_again_after_a_pause_up_to_three_attempts() -> None:
    p = plan(quorum=3)
    assert p.next(0.0, ["a", "b", "c"], set()) == AskSnapshots(("a", "b", "c"), 10.0)
    assert p.next(2.0, ["a", "b", "c"], {"a"}) == Wait(3.0)  # below quorum: ask b and c again at 3.0
    assert p.next(2.5, ["a", "b", "c", "d"], {"a"}) == Wait(3.0)
    assert p.next(3.0, ["a", "b", "c", "d"], {"a"}) == AskSnapshots(
        ("b", "c"), 10.0
    )  # chosen before the pause
    assert p.next(4.0, ["a", "b", "c"], {"a"}) == Wait(5.0)
    assert p.next(5.0, ["a", "b", "c"], {"a"}) == AskSnapshots(("b", "c"), 10.0)
    assert p.next(6.0, ["a", "b", "c"], {"a"}) == Finish()  # three attempts made


def test_a_peer_asked_but_disconnected_meanwhile_is_asked_again() -> None:
    """A resync closes the connection the request went over and redials: the peer is not connected for a
    moment. The join used to look only at that moment's connections and end with nothing from it."""
    p = plan(quorum=2)
    assert p.next(0.0, ["a", "b"], set()) == AskSnapshots(("a", "b"), 10.0)
    assert p.next(1.0, ["a"], {"a"}) == Wait(2.0)  # b's request was lost with its connection
    assert p.next(2.0, ["a", "b"], {"a"}) == AskSnapshots(("b",), 10.0)
    assert p.next(3.0, ["a", "b"], {"a", "b"}) == Finish()


def test_a_quorum_after_the_first_attempt_ends_the_join() -> None:
    p = plan(quorum=2)
    p.next(0.0, ["a", "b", "c"], set())
    assert p.next(1.0, ["a", "b", "c"], {"a", "b"}) == Finish()  # c is not waited for


def test_the_first_attempt_asks_everyone_even_with_a_quorum_known() -> None:
    p = plan(quorum=1)
    assert p.next(0.0, ["a", "b"], {"a"}) == AskSnapshots(("b",), 10.0)


def test_the_join_ends_at_its_timeout() -> None:
    p = plan(timeout_s=2.5)
    p.next(0.0, ["a", "b"], set())
    assert p.next(2.0, ["a", "b"], set()) == Wait(2.5)  # the pause is cut short by the deadline
    assert p.next(2.5, ["a", "b"], set()) == Finish()


def test_the_own_model_changes_only_with_a_quorum_of_usable_snapshots() -> None:
    p = plan(quorum=2)
    assert not p.apply(1)
    assert p.apply(2) and p.apply(3)
