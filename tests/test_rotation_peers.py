"""Link rotation with real peers on the memory transport (``[peer] rotate_every``, p2pfl.peer_rotation): links
change and the degree holds, refused peers are never dialled, static peers stay linked, and on a ring with
skewed data rotation brings the peers' models closer together than the static ring does."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from p2pfl.aggregation import AggregationConfig
from p2pfl.errors import ConfigError
from p2pfl.identity import Identity
from p2pfl.peer import Peer, PeerConfig
from p2pfl.peer_rotation import Dial, LinkRotation, address_candidates
from p2pfl.sim.data import peer_splits
from p2pfl.sim.determinism import seeded_scheduler
from p2pfl.transport.memory import MemoryNetwork

from .test_mix_steps import _flat
from .test_mix_steps import _network as _mix_network

MEAN = AggregationConfig(rule="mean", nnm=False, self_clip_scale=None)
RING = [(i, (i + 1) % 8) for i in range(8)]
#: peers that mix with the plain mean and score nobody: the tests are about links, not scoring
PLAIN: dict[str, Any] = {"scoring_enabled": False, "aggregation": MEAN, "max_round_wait_s": 5}


def _wire(peers: list[Peer]) -> None:
    for p in peers:
        assert p.rotation is not None
        others = {q.peer_id: f"memory/{q.peer_id}" for q in peers if q is not p}
        p.rotation.candidates = address_candidates(p.connect, others)  # what a simulation gives its peers


async def _network(n: int, edges: list[tuple[int, int]], rounds: int, **kw: Any) -> list[Peer]:
    """test_mix_steps' network on a seeded scheduler (trio's order, as ``--reproducible`` runs seed it: the
    same links every run), each peer's links after its last round's rotation kept in ``p.final_links``
    (read while the peers still run: a stopped peer has no transport)."""
    setup = kw.pop("setup", lambda peers: None)

    def keep(peers: list[Peer]) -> None:
        setup(peers)
        for p in peers:
            parts = p.rounds._p
            rotate = parts.rotate

            async def after(round_: int, p: Peer = p, rotate: Any = rotate) -> None:
                if rotate is not None:
                    await rotate(round_)
                p.final_links = set(p.neighbours())  # type: ignore[attr-defined]

            parts.rotate = after

    with seeded_scheduler(11):
        return await _mix_network(n, edges, rounds, setup=keep, **kw)


def _links(peers: list[Peer]) -> set[frozenset[str]]:
    return {frozenset((p.peer_id, q)) for p in peers for q in p.final_links}  # type: ignore[attr-defined]


async def test_rotation_changes_links_and_keeps_the_degree(autojump_clock: trio.testing.MockClock) -> None:
    """Every link counts here (``mix_scope = "connected"``). With ``"chosen"`` only a peer's own dials do,
    and a link both ends chose ends when either end's rotation closes it, so a peer may end a round below
    the degree until its next top-up (tests/simulations/test_rotation_redial.py runs rotation with
    ``"chosen"``)."""
    ring = {frozenset((f"{a}", f"{b}")) for a, b in RING}
    peers = await _network(
        8,
        RING,
        6,
        setup=_wire,
        rotate_every=2,
        rotate_degree=2,
        mix_scope="connected",
        **PLAIN,
    )
    ids = {p.peer_id: str(i) for i, p in enumerate(peers)}
    now = {frozenset(ids[x] for x in link) for link in _links(peers)}
    assert now != ring and now - ring  # links the ring did not have
    for p in peers:
        rot = p.rotation
        assert rot is not None and rot.degree == 2
        assert rot.dialled + rot.closed >= 1  # (a peer others dialled may only ever close links)
        # dialled back up to the degree after every round (the top-up); inbound dials may add more
        assert 2 <= len(p.final_links) <= 5, [len(q.final_links) for q in peers]
    degrees = [len(p.final_links) for p in peers]
    assert 1.5 <= sum(degrees) / len(degrees) <= 3.5, degrees
    assert sum(p.rotation.dialled for p in peers if p.rotation is not None) >= 4


async def test_a_refused_peer_is_never_dialled(autojump_clock: trio.testing.MockClock) -> None:
    """Peer 7 is not on anybody's allow-list: no rotation dials it (and its own dials are refused), and
    the others keep rotating among themselves."""
    ids = [Identity(bytes([i + 1]) * 32).peer_id for i in range(8)]  # test_peer.memory_peer's identities
    allow = frozenset(ids[:7])
    ring7 = [(i, (i + 1) % 7) for i in range(7)]
    peers = await _network(
        8,
        ring7,
        6,
        setup=_wire,
        rotate_every=1,
        rotate_degree=2,
        allow=allow,
        **PLAIN,
        min_neighbours=0,
    )
    for p in peers[:7]:
        assert ids[7] not in p.final_links
        assert p.rotation is not None and p.rotation.dialled >= 1


async def test_static_peers_stay_linked(autojump_clock: trio.testing.MockClock) -> None:
    """Peers 0 and 1 are each other's static peer (each end pins the link: a rotation closes only its own
    links, and a neighbour's rotation may close a link this end pinned; the housekeeping re-dials it)."""
    pinned = Identity(bytes([2]) * 32).peer_id  # peer 1, peer 0's ring neighbour

    def setup(peers: list[Peer]) -> None:
        _wire(peers)
        for me, other in ((0, 1), (1, 0)):
            rot = peers[me].rotation
            assert rot is not None
            rot._pinned = lambda other=other: frozenset({peers[other].peer_id})  # as build_rotation does

    peers = await _network(
        8,
        RING,
        8,
        setup=setup,
        rotate_every=1,
        rotate_degree=2,
        **PLAIN,
    )
    rot = peers[0].rotation
    assert rot is not None and rot.closed >= 2
    assert pinned in peers[0].final_links


def _spread(peers: list[Peer]) -> float:
    """The mean distance between two peers' own models."""
    vecs = [_flat(p.params()) for p in peers]
    return float(np.mean([np.linalg.norm(a - b) for a, b in itertools.combinations(vecs, 2)]))


async def test_rotation_mixes_a_skewed_ring_faster_than_the_static_ring(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The point of rotation: the same degree, but models cross the network in fewer rounds (measured on
    this ring of 8 after 8 rounds: the mean distance between two peers' models with rotation every round
    is 0.73 of the static ring's at this scheduler seed, 0.50-0.83 at seeds 1-5; unseeded, trio's
    scheduling order varied it from run to run)."""
    spreads = {}
    for every in (0, 1):
        peers = await _network(
            8,
            RING,
            8,
            setup=_wire if every else lambda peers: None,
            partition="dirichlet",
            rotate_every=every,
            rotate_degree=2,
            **PLAIN,
        )
        spreads[every] = _spread(peers)
    assert spreads[1] < 0.85 * spreads[0], spreads


@pytest.mark.parametrize("key", ["rotate_every", "rotate_degree"])
@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_rotation_settings_outside_their_range_are_config_errors(key: str, bad: object) -> None:
    with pytest.raises(ConfigError) as exc:
        PeerConfig(network_id="n", **{key: bad})
    assert (exc.value.section, exc.value.key) == ("peer", key)


@pytest.mark.parametrize("bad", [-0.5, 101, True, "1"])
def test_a_cooldown_outside_its_range_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError) as exc:
        PeerConfig(network_id="n", rotate_cooldown=bad)
    assert (exc.value.section, exc.value.key) == ("peer", "rotate_cooldown")


def test_the_cooldown_is_counted_in_link_lifetimes() -> None:
    """A link becomes the oldest after about ``every * degree`` rounds: the rest is a multiple of that."""

    def rest(**kw: Any) -> int:
        return PeerConfig(network_id="n", rotate_degree=4, **kw).cooldown_rounds

    assert rest(rotate_every=2) == 8
    assert rest(rotate_every=3, rotate_cooldown=0.5) == 6
    assert rest(rotate_every=2, rotate_cooldown=0) == 0


@pytest.mark.parametrize("scope", ["connected", "chosen"])
async def test_a_peer_neither_dials_nor_accepts_a_link_it_closed_while_it_rests(
    autojump_clock: trio.testing.MockClock, scope: str
) -> None:
    """Every closed link rests: while it does, neither end's rotation or discovery links it again, and
    each peer's rests are as many as its recent closes. With ``mix_scope = "connected"`` the closing end
    also refuses it in its transport; with ``"chosen"`` the resting peer may dial in, but the link is
    neither chosen nor mixed."""
    seen: dict[str, list[tuple[int, set[str], set[str]]]] = {}

    def setup(peers: list[Peer]) -> None:
        _wire(peers)
        for p in peers:
            rot, parts = p.rotation, p.rounds._p
            assert rot is not None
            rotate = parts.rotate

            async def after(round_: int, p: Peer = p, rot: Any = rot, rotate: Any = rotate) -> None:
                resting = {q.peer_id for q in peers if rot.rest.resting(q.peer_id, rot.round)}
                learning = {q for q in p.neighbours() if p._learning_link(q) or p._may_mix(q)}
                seen.setdefault(p.peer_id, []).append((round_, resting, learning))
                await rotate(round_)

            parts.rotate = after

    peers = await _network(
        8, RING, 10, setup=setup, rotate_every=1, rotate_degree=2, mix_scope=scope, **PLAIN
    )
    rests = 0
    for p in peers:
        rot = p.rotation
        assert rot is not None and rot.rest.rounds == 2
        for _round, resting, links in seen[p.peer_id]:
            assert not resting & links, (resting, links)  # a resting peer is never a learning link
            rests += len(resting)
    assert rests >= 8  # rotations closed links, and they rested


def test_discovery_dials_up_to_the_rotation_degree_not_max_neighbours() -> None:
    """Discovery must not refill what rotation closes: with rotation on it stops at ``rotate_degree``."""
    assert PeerConfig(network_id="n", max_neighbours=16).learning_degree == 16
    assert PeerConfig(network_id="n", rotate_every=2, rotate_degree=3).learning_degree == 3
    assert PeerConfig(network_id="n", rotate_every=2).learning_degree == 16  # degree 0: max_neighbours
    assert PeerConfig(network_id="n", rotate_degree=3).learning_degree == 16  # rotation off


async def test_status_reports_the_rotation(autojump_clock: trio.testing.MockClock) -> None:
    peers = await _network(
        4,
        [(0, 1), (1, 2), (2, 3)],
        4,
        setup=_wire,
        rotate_every=2,
        rotate_degree=1,
        **PLAIN,
    )
    for p in peers:
        rot = p.rotation
        assert rot is not None
        assert rot.status() == {
            "every": 2,
            "degree": 1,
            "cooldown": 2,  # one link lifetime: every * degree rounds
            "dialled": rot.dialled,
            "closed": rot.closed,
            "resting": len(rot.rest),
        }
        assert p.status()["rotation"] == rot.status()
    assert sum(p.rotation.closed for p in peers if p.rotation is not None) >= 1


async def test_a_failing_source_dial_or_close_never_ends_the_round() -> None:
    """A registry answer, a dial or a close that raises anything costs that link only (hostile remotes and
    transport bugs must not end the peer's round loop)."""
    from p2pfl.peer_rotation import LinkRotation

    links = ["a", "b", "c"]
    closed: list[str] = []

    async def close(p: str) -> None:
        closed.append(p)
        raise RuntimeError("transport bug")

    async def raising_source() -> dict[str, Dial]:
        raise RuntimeError("registry answered garbage")

    rot = LinkRotation(
        every=1,
        degree=2,
        secret=b"\x01" * 8,
        me="me",
        links=lambda: list(links),
        may_dial=lambda p: p != "evicted",
        disconnect=close,
        pinned=frozenset,
        candidates=raising_source,
    )
    await rot.after_round(1)  # no candidates: only the links beyond the degree are closed
    assert len(closed) == 1 and rot.dialled == 0 and rot.closed == 1

    tried: list[str] = []

    def dial(p: str, outcome: object) -> Dial:
        async def go() -> bool:
            tried.append(p)
            if isinstance(outcome, BaseException):
                raise outcome
            return bool(outcome)

        return go

    async def source() -> dict[str, Dial]:
        return {
            "x": dial("x", RuntimeError("peer hung up")),
            "y": dial("y", False),
            "evicted": dial("evicted", True),
            "z": dial("z", True),
        }

    rot.candidates = source
    links[:] = ["b", "c"]  # at the degree: one more is dialled, then the oldest closed
    closed.clear()
    await rot.after_round(2)
    assert "evicted" not in tried and tried[-1] == "z"  # dialled in random order until one answered
    assert rot.dialled == 1  # z (x raised, y refused)
    assert len(closed) == 1 and closed[0] in ("b", "c")  # though the close raised


def test_static_peers_and_secure_aggregation_fellows_are_pinned() -> None:
    """Their links are never closed by a rotation: a static peer is wanted by its operator, and a secure-
    aggregation group's channel runs over its fellows' links (docs/secagg.md)."""
    from p2pfl.secagg.config import SecAggConfig

    from .test_peer import learner_for

    ids = [Identity(bytes([i + 1]) * 32).peer_id for i in range(4)]
    config = PeerConfig(
        network_id="n",
        rotate_every=2,
        static_peers=(f"/ip4/127.0.0.1/tcp/4001/p2p/{ids[3]}",),
        secagg=SecAggConfig(enabled=True, members=tuple(ids[:3])),
    )
    peer = Peer(config, learner_for(peer_splits("digits", 2, seed=1)[0], 0), Identity(bytes([1]) * 32))
    assert peer.rotation is not None
    assert peer.rotation._pinned() == frozenset({ids[1], ids[2], ids[3]})


def test_a_scenario_rotates_its_peers_links(tmp_path: Path) -> None:
    """``[run] rotate_every`` in a scenario (memory engine): every peer rotates, keeping its degree in
    ``[topology]`` (here 2, a ring), and the run still learns."""
    from p2pfl.sim.runner import run_scenario
    from p2pfl.sim.scenario import parse_scenario

    sc = parse_scenario(
        {
            "run": {"seed": 3, "rounds": 8, "transport": "memory", "rotate_every": 2},
            "data": {"dataset": "digits", "partition": "iid"},
            "model": {"kind": "logreg", "local_steps": 10},
            "topology": {"peers": 8, "kind": "ring"},
        },
        name="rotation-memory",
    )
    r = run_scenario(sc, tmp_path, quiet=True, plots=False)
    assert not r["timed_out"]
    for p in r["peers"]:
        rot = p["rotation"]
        assert rot is not None and rot["every"] == 2 and rot["degree"] == 2, p
        assert rot["dialled"] + rot["closed"] >= 1, p
    assert r["honest_accuracy"]["mean"] >= 0.85, r["honest_accuracy"]


def test_a_link_that_ends_otherwise_rests_too_unless_pinned() -> None:
    """A neighbour that drops its link itself (or whose rotation closed it) is refused for the rest as
    well: both ends of an ended link rest, and one that drops its link to come back young (the ``refresh``
    attack) cannot. A pinned link that drops does not rest (its operator wants it back)."""
    held: list[str] = []

    async def never(peer_id: str) -> None:
        raise AssertionError("no close here")

    unchosen: list[str] = []
    rot = LinkRotation(
        every=2,
        degree=2,
        secret=b"s",
        me="me",
        links=lambda: list(held),
        may_dial=lambda p: True,
        disconnect=never,
        pinned=lambda: frozenset({"static"}),
        candidates=None,
        cooldown=4,
        ended=unchosen.append,
    )
    held[:] = ["a", "b", "static"]
    rot.note_links(1)
    held[:] = ["b"]  # a and the static peer drop their links during round 3
    rot.round = 3
    rot.note_links(3)
    assert not rot.link_allowed("a") and rot.link_allowed("static") and rot.link_allowed("b")
    assert unchosen == ["a"]  # chosen no more: if it dials back, the link is its choice, not ours
    rot.round = 6
    assert not rot.link_allowed("a")  # rests through round 2 + 4
    rot.round = 7
    assert rot.link_allowed("a")


async def test_mix_scope_chosen_mixes_only_the_links_this_peer_dialled_or_chose(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Peers 0 and 1 dial each other; peers 2 and 3 dial peer 0 (an attacker that dials everyone looks like
    them). With ``mix_scope = "chosen"`` peer 0 mixes peer 1 only (the default mixes all three), and its
    rounds do not wait for the versions of links it ignores (they did, into the round's time limit: 6 s
    of the fake clock for three rounds); peer 2 is mixed too once the host chooses it."""
    edges = [(0, 1), (1, 0), (2, 0), (3, 0)]
    mixed, took = {}, {}
    for scope in ("connected", "chosen"):
        t0 = trio.current_time()
        peers = await _network(4, edges, 3, mix_scope=scope, both_choose=False, **PLAIN)
        took[scope] = trio.current_time() - t0
        mixed[scope] = [r.mixed for r in peers[0].reports]
        assert all(r.neighbours == 3 for r in peers[0].reports)
    assert mixed == {"connected": [3, 3, 3], "chosen": [1, 1, 1]}, mixed
    assert took["chosen"] < 1.0, took  # max_round_wait_s is 5 s
    p0 = peers[0]
    assert p0.chosen == {peers[1].peer_id}
    assert p0._may_mix(peers[1].peer_id) and not p0._may_mix(peers[2].peer_id)
    p0.choose([peers[2].peer_id])
    assert p0._may_mix(peers[2].peer_id) and not p0._may_mix(peers[3].peer_id)


async def test_a_resting_peer_is_not_mixed_even_while_connected() -> None:
    """Over libp2p a resting peer that keeps dialling is connected for the moment its refused connection
    takes to close; its announcement must not be mixed meanwhile."""
    from .test_peer import learner_for, memory_peer

    net = MemoryNetwork()
    splits = peer_splits("digits", 2, seed=1)
    async with (
        memory_peer(0, learner_for(splits[0], 0), net, rotate_every=1, rotate_degree=1, **PLAIN) as a,
        memory_peer(1, learner_for(splits[1], 1), net, **PLAIN) as b,
    ):
        await a.connect(f"memory/{b.peer_id}")
        rot = a.rotation
        assert rot is not None and rot.rest.rounds == 1
        assert a._may_mix(b.peer_id)
        rot.rest.start(b.peer_id, rot.round)  # as if closed, and b dialled back before the close was done
        assert b.peer_id in a.neighbours() and not a._may_mix(b.peer_id)
        rot.round += 2  # the rest is over
        assert a._may_mix(b.peer_id)


async def test_a_peer_that_only_accepts_links_mixes_them_and_one_with_registries_waits_to_choose() -> None:
    """``mix_scope = "chosen"`` (the default): a peer without static peers or registries that chose nobody
    mixes every connected peer (all its links are other peers' choices); once it chooses, only those, even
    after they have all ended. A peer with registries mixes nobody its discovery has not chosen."""
    from .test_peer import learner_for, memory_peer

    net = MemoryNetwork()
    splits = peer_splits("digits", 3, seed=1)
    registry = f"/ip4/127.0.0.1/tcp/4001/p2p/{Identity(bytes([9]) * 32).peer_id}"
    async with (
        memory_peer(0, learner_for(splits[0], 0), net, **PLAIN) as hub,
        memory_peer(1, learner_for(splits[1], 1), net, **PLAIN) as a,
        memory_peer(2, learner_for(splits[2], 2), net, **PLAIN) as b,
    ):
        assert hub.config.mix_scope == "chosen"
        await a.connect(f"memory/{hub.peer_id}")
        await b.connect(f"memory/{hub.peer_id}")
        assert hub._may_mix(a.peer_id) and hub._may_mix(b.peer_id)  # it only accepts: both
        assert a._may_mix(hub.peer_id) and not b._may_mix(a.peer_id)  # (a and b are not linked)
        hub.choose([a.peer_id])
        assert hub._may_mix(a.peer_id) and not hub._may_mix(b.peer_id)
        hub.chosen.clear()  # every link it chose ended (e.g. its rotation un-chose them)
        assert not hub._may_mix(a.peer_id) and not hub._may_mix(b.peer_id)  # it chose once: no fallback
        b.config = PeerConfig(network_id="digits", bootstrap=(registry,))
        b.chosen.clear()
        b.has_chosen = False
        assert not b._may_mix(hub.peer_id)  # it has registries: it waits for its discovery's choice
