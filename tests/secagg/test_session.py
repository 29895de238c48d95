"""Members out of step (p2pfl.secagg.session), on a fake clock: a member that starts late or is rounds
behind joins the group's round; one that is ahead waits and the others catch up; and the adversarial
cases: a member that lags on purpose, replays an old round's messages, or advertises far-off rounds. Never
a wrong mean, never a wait longer than a round's own deadlines."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from p2pfl.secagg import GroupSpec, Send
from p2pfl.secagg.group import GroupResult
from p2pfl.secagg.messages import decode, encode, encode_body
from p2pfl.secagg.session import GroupSession

from .harness import det_rand, identities

N, T, DIM = 8, 5, 16
ADVERTISE_S, PHASE_S, TRAIN_S = 30.0, 10.0, 5.0
#: the longest a group round may take: its advertise wait (twice: it may leave for a later round once)
#: plus the four later phases
ROUND_BOUND_S = 2 * ADVERTISE_S + 4 * PHASE_S + 1.0

#: (src, dst, data, now) -> [(delay, data)] to deliver instead (adversarial members and networks)
Tamper = Callable[[int, int, bytes, float], list[tuple[float, bytes]]]


@dataclass
class Done:
    member: int
    group_round: int
    began: float
    ended: float
    result: GroupResult | None
    failure: str | None


@dataclass
class Group:
    """``N`` members, each looping: begin a group round, run it to its end, train ``TRAIN_S``, again."""

    start_at: dict[int, float] = field(default_factory=dict)
    floor: dict[int, int] = field(default_factory=dict)
    tamper: Tamper | None = None
    now: float = 0.0

    def __post_init__(self) -> None:
        ids = identities(N, seed=3)
        self.spec = GroupSpec(
            "net",
            tuple(i.peer_id for i in ids),
            T,
            DIM,
            advertise_timeout_s=ADVERTISE_S,
            phase_timeout_s=PHASE_S,
        )
        self.ident = {self.spec.index(i.peer_id): i for i in ids}
        self.sessions = {k: GroupSession(self.ident[k], randbytes=det_rand(k)) for k in range(N)}
        for s in self.sessions.values():
            s.use(self.spec)
        rng = np.random.default_rng(5)
        self.xs = {k: rng.uniform(-1, 1, DIM).astype(np.float32) for k in range(N)}
        self.next_begin = {k: self.start_at.get(k, 0.0) for k in range(N)}
        self.began: dict[int, float] = {}
        self.done: list[Done] = []
        self.sent: list[tuple[int, int, bytes]] = []
        self._queue: list[tuple[float, int, int, int, bytes]] = []
        self._seq = 0

    def send(self, src: int, sends: list[Send]) -> None:
        for s in sends:
            for dst in s.to:
                self.sent.append((src, dst, s.data))
                out = self.tamper(src, dst, s.data, self.now) if self.tamper is not None else [(0.0, s.data)]
                for delay, data in out:
                    self.inject(dst, data, delay, src)

    def inject(self, dst: int, data: bytes, delay: float = 0.0, src: int = -1) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, src, dst, data))

    def _settle(self, k: int) -> None:
        s = self.sessions[k]
        if k in self.began and s.done:
            number = s.current.round if s.current is not None else -1
            result, failure = s.finish()
            self.done.append(Done(k, number, self.began.pop(k), self.now, result, failure))
            self.next_begin[k] = self.now + TRAIN_S

    def run(self, until: float, max_steps: int = 200_000) -> Group:
        for _ in range(max_steps):
            if self._queue and self._queue[0][0] <= self.now:
                _at, _seq, _src, dst, data = heapq.heappop(self._queue)
                self.send(dst, self.sessions[dst].receive(data, self.now))
                self._settle(dst)
                continue
            for k, s in self.sessions.items():
                if k in self.began:
                    self.send(k, s.tick(self.now))
                    self._settle(k)
                elif self.next_begin[k] <= self.now:
                    self.began[k] = self.now
                    self.send(k, s.begin(self.spec, self.xs[k], self.now, floor=self.floor.get(k, 0)))
                    self._settle(k)
            if self._queue and self._queue[0][0] <= self.now:
                continue
            times = [self.sessions[k].deadline for k in self.began]
            times += [t for k, t in self.next_begin.items() if k not in self.began]
            times += [self._queue[0][0]] if self._queue else []
            nxt = min(times) + 1e-3
            if nxt > until:
                return self
            self.now = max(self.now, nxt)
        raise AssertionError("the run did not end within max_steps")

    def completed(self, k: int) -> list[Done]:
        return [d for d in self.done if d.member == k and d.result is not None]


def assert_every_mean_is_right(g: Group) -> None:
    """Whatever a member got is the plain mean of exactly the members its result names."""
    err = g.spec.fixed.max_error()
    for d in g.done:
        if d.result is not None:
            expected = np.mean([g.xs[k].astype(np.float64) for k in d.result.survivors], axis=0)
            assert np.max(np.abs(d.result.mean.astype(np.float64) - expected)) <= err, d


def assert_rounds_bounded(g: Group, members: list[int]) -> None:
    for d in g.done:
        if d.member in members:
            assert d.ended - d.began <= ROUND_BOUND_S, d


def test_members_in_step_complete_every_round_together() -> None:
    g = Group().run(until=60)
    assert_every_mean_is_right(g)
    for k in range(N):
        assert len(g.completed(k)) >= 5
        assert all(len(d.result.survivors) == N for d in g.completed(k))  # type: ignore[union-attr]
    assert sum(s.overtaken for s in g.sessions.values()) == 0


def offline_until(member: int, at: float) -> Tamper:
    """Messages to ``member`` before ``at`` are lost (it is not up yet: a process starting late)."""

    def tamper(src: int, dst: int, data: bytes, now: float) -> list[tuple[float, bytes]]:
        return [] if dst == member and now < at else [(0.0, data)]

    return tamper


def test_a_member_starting_late_joins_the_round_the_group_is_in() -> None:
    """Member 7 comes up at t=100, having heard nothing, with its counter at 1 while the others are rounds
    ahead: its round-1 advert is a stale round to the others (rejected cleanly, counted), it leaves its
    round 1 for the group's next round as soon as it hears that round's adverts, and completes it with all
    eight members."""
    g = Group(start_at={7: 100.0}, tamper=offline_until(7, 100.0)).run(until=200)
    assert_every_mean_is_right(g)
    assert_rounds_bounded(g, list(range(N)))
    late = g.completed(7)
    assert late, [d for d in g.done if d.member == 7]
    assert late[0].group_round > 3 and len(late[0].result.survivors) == N  # type: ignore[union-attr]
    others = {d.group_round for d in g.completed(0)}
    assert late[0].group_round in others
    assert g.sessions[7].overtaken == 1
    assert sum(g.sessions[k].rejections["stale_round"] for k in range(7)) == 7  # its round-1 advert


def test_a_member_that_heard_the_group_before_its_first_round_begins_in_the_groups_round() -> None:
    """Up early but slow to train: the adverts it kept say which round the group is in."""
    g = Group(start_at={7: 100.0}).run(until=200)
    assert_every_mean_is_right(g)
    late = g.completed(7)
    assert late and len(late[0].result.survivors) == N  # type: ignore[union-attr]
    assert late[0].began == 100.0 + 1e-3 or late[0].began == 100.0
    assert g.sessions[7].overtaken == 0


def test_a_member_ahead_waits_and_the_others_catch_up() -> None:
    """Member 2's counter is at 50 (it ran rounds alone): the others take its number; from then on the
    group completes rounds with all eight."""
    g = Group(floor={2: 50}).run(until=120)
    assert_every_mean_is_right(g)
    assert_rounds_bounded(g, list(range(N)))
    for k in range(N):
        done = g.completed(k)
        assert done and all(d.group_round >= 50 for d in done), (k, done)
        assert all(len(d.result.survivors) == N for d in done)  # type: ignore[union-attr]


def test_a_member_a_round_behind_joins_the_next_round() -> None:
    """Member 5 trains much longer than the others once (it is a round behind): it never holds the others
    past an advertise wait, and it is back in the group's rounds after it."""
    g = Group()
    g.run(until=20)
    assert 5 not in g.began  # training
    g.next_begin[5] += 45.0  # this training takes 45 s more
    g.run(until=200)
    assert_every_mean_is_right(g)
    assert_rounds_bounded(g, list(range(N)))
    back = next(d for d in g.done if d.member == 5 and d.began >= 65.0)  # its first round after that
    assert back.result is not None and len(back.result.survivors) == N, back
    assert back.group_round in {d.group_round for d in g.completed(0)}
    assert back.group_round > max(d.group_round for d in g.done if d.member == 5 and d.began < 65.0) + 1


def test_a_member_lagging_on_purpose_never_stalls_the_others_nor_changes_a_mean() -> None:
    """Member 4 holds every message back 35 s (past the advertise wait): its contributions arrive for rounds
    that are over and are rejected (``late``/``stale_round``); the others complete every round without it,
    each within the bounded wait."""

    def lag(src: int, dst: int, data: bytes, now: float) -> list[tuple[float, bytes]]:
        return [(35.0 if src == 4 else 0.0, data)]

    g = Group(tamper=lag).run(until=300)
    assert_every_mean_is_right(g)
    honest = [k for k in range(N) if k != 4]
    assert_rounds_bounded(g, honest)
    for k in honest:
        done = g.completed(k)
        assert len(done) >= 4, k
        assert 4 not in done[-1].result.survivors  # type: ignore[union-attr]
    rejected = sum(g.sessions[k].rejections["late"] + g.sessions[k].rejections["stale_round"] for k in honest)
    assert rejected > 0


def test_a_member_replaying_old_rounds_messages_changes_nothing() -> None:
    """Member 6 re-sends, with each message of its own, every message it sent in earlier rounds (and an
    outsider on the network replays them to everyone too): all are rejected as of other rounds, and every
    round completes with all eight and the right mean."""
    history: list[bytes] = []

    def replay(src: int, dst: int, data: bytes, now: float) -> list[tuple[float, bytes]]:
        if src != 6:
            return [(0.0, data)]
        old = [(0.0, h) for h in history[-40:] if h != data]
        history.append(data)
        return [*old, (0.0, data)]

    g = Group(tamper=replay).run(until=100)
    assert_every_mean_is_right(g)
    assert_rounds_bounded(g, list(range(N)))
    for k in range(N):
        done = g.completed(k)
        assert len(done) >= 5 and all(len(d.result.survivors) == N for d in done)  # type: ignore[union-attr]
    assert (
        sum(g.sessions[k].rejections["stale_round"] + g.sessions[k].rejections["late"] for k in range(N)) > 0
    )


def _lure(g: Group, aheads: tuple[int, ...], to: Callable[[int], bool]) -> Tamper:
    """Member 1 adds to each of its adverts adverts of rounds ``aheads`` later (same keys), to ``to(dst)``."""

    def tamper(src: int, dst: int, data: bytes, now: float) -> list[tuple[float, bytes]]:
        out = [(0.0, data)]
        msg = decode(data, group=g.spec.group, members=g.spec.members, dim=DIM)
        if src == 1 and msg.kind == "advertise" and to(dst):
            for ahead in aheads:
                body = encode_body(msg.body)
                out.append((0.0, encode(g.ident[1], "advertise", g.spec.group, msg.round + ahead, body)))
        return out

    return tamper


def test_adverts_of_far_off_rounds_are_refused() -> None:
    """Member 1 advertises a round a million ahead with each advert: refused (``wrong_round``, beyond
    ``max_skip``), so nobody's numbers run away; every round completes with all eight."""
    g = Group()
    g.tamper = _lure(g, (1_000_000,), lambda dst: True)
    g.run(until=100)
    assert_every_mean_is_right(g)
    assert sum(g.sessions[k].rejections["wrong_round"] for k in range(N) if k != 1) > 0
    for k in range(N):
        done = g.completed(k)
        assert len(done) >= 5 and all(len(d.result.survivors) == N for d in done)  # type: ignore[union-attr]
        assert all(d.group_round < 1000 for d in done)


def test_a_member_luring_half_the_group_to_the_next_round_fails_rounds_but_never_stalls_or_skews_them() -> (
    None
):
    """The adaptive attacker who knows the rule: member 1 advertises, to half the group, the next round too
    (with each of its adverts), so those members leave their round for it, and then hold another advert
    of member 1 than the rest of the group does. An insider can make a round fail (as a lying view does):
    here every such round fails ``inconsistent`` before any reveal. It cannot make a round wrong, nor keep
    the others waiting: a member leaves a round for a later one at most once per round it begins, so
    every round ends within its bounded waits."""
    g = Group()
    g.tamper = _lure(g, (1,), lambda dst: dst % 2 == 0)
    g.run(until=400)
    assert_every_mean_is_right(g)
    honest = [k for k in range(N) if k != 1]
    assert_rounds_bounded(g, honest)
    for k in honest:
        ended = [d.ended for d in g.done if d.member == k]
        assert len(ended) >= 10, k  # rounds keep ending: nobody is held in an advertise phase
        assert {d.failure for d in g.done if d.member == k} <= {None, "inconsistent", "below_threshold"}
