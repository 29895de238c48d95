"""The Peer against a hostile neighbour and a registry, over the in-memory transport (real peer code, fast).

Whatever a neighbour sends (crafted envelopes, bad tensor shapes, failing handlers), the peer keeps running
its rounds and counts a rejection against that neighbour; a crash of ours ends with a CRITICAL line, never
with the INFO line of a clean stop. A bootstrap registry is never a learning neighbour, and a clean stop
withdraws the peer's registration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import trio

from p2pfl.bootstrap.service import BootstrapService, Registry, RegistryConfig
from p2pfl.identity import Identity
from p2pfl.peer import Peer, PeerConfig
from p2pfl.protocol import (
    DELTA_PROTOCOL,
    INTERNAL_ERROR,
    SNAPSHOT_PROTOCOL,
    GossipEngine,
    RequestSnapshot,
)
from p2pfl.sim.data import peer_splits
from p2pfl.transport.memory import MemoryNetwork
from p2pfl.wire import digest, encode_tensors, model_digest
from tests.hostile_bytes import bytes_key_envelope, header_for, huge_shape_payload, pack, signed
from tests.test_peer import learner_for, memory_peers, run_all

HOSTILE = Identity(bytes([0xEE]) * 32)
REGISTRY = Identity(bytes([0xDD]) * 32)


def rejected_from(e: GossipEngine, peer: str) -> int:
    return sum(e.rejections_by_peer.get(peer, {}).values())


async def wait_for(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    with trio.move_on_after(timeout):
        while not check():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class HostileServer:
    """What the hostile neighbour answers on the snapshot and delta protocols (set by the test)."""

    def __init__(self) -> None:
        self.snapshot = b""
        self.payload = b""
        self.requests: list[str] = []

    async def serve_snapshot(self, peer: str, request: bytes) -> bytes:
        self.requests.append("snapshot")
        return self.snapshot

    async def serve_payload(self, peer: str, request: bytes) -> bytes:
        self.requests.append("delta")
        return self.payload


async def test_a_peer_survives_crafted_snapshots_gossip_and_payloads_and_counts_each() -> None:
    """Join snapshot with a bytes header key, a gossiped envelope with one, a requested snapshot with a
    [0, 2**63] tensor, a fetched payload with one: each a counted rejection, and the rounds go on."""
    splits = peer_splits("digits", 2, partition_kind="iid", seed=1)
    net = MemoryNetwork()
    server = HostileServer()
    server.snapshot = bytes_key_envelope(HOSTILE, "digits")
    async with (
        memory_peers(2, splits, net, scoring_enabled=False, max_round_wait_s=0.5) as peers,
        net.open(network_id="digits", seed=HOSTILE.seed) as h,
    ):
        a = peers[0].engine
        h.set_request_handler(SNAPSHOT_PROTOCOL, server.serve_snapshot)
        h.set_request_handler(DELTA_PROTOCOL, server.serve_payload)
        await h.connect(f"memory/{peers[0].peer_id}")
        peers[0].choose((h.peer_id,))  # a chosen neighbour turned hostile: its inputs reach every handler
        layout = a.layout
        zeros = layout.unflatten(np.zeros(layout.size, np.float32))
        good_payload = encode_tensors(zeros)

        def delta(seq: int, base: bytes, payload: bytes, inline: bool = True) -> bytes:
            # one claimed model per version: two different ones would be an equivocation (a conviction)
            result = digest(b"version %d" % seq)
            header = header_for(
                HOSTILE, "digits", payload, seq=seq, base=base, arch=layout.arch, result=result
            )
            return signed(HOSTILE, header, payload, inline=inline)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_all, peers, 8)
            # (1) the join fetches the hostile's snapshot: a header with a bytes key (TypeError before)
            await wait_for(lambda: rejected_from(a, h.peer_id) >= 1, "the join's snapshot rejection")
            # (2) the same bytes over gossip: refused by the validator, counted against the forwarder
            await h.broadcast(bytes_key_envelope(HOSTILE, "digits", kind="delta"))
            await wait_for(lambda: rejected_from(a, h.peer_id) >= 2, "the gossip rejection")
            # (3) a valid delta with a gap makes the peer request a snapshot: a signed [0, 2**63] tensor
            big = header_for(HOSTILE, "digits", huge_shape_payload(), kind="snapshot", arch=layout.arch)
            server.snapshot = signed(HOSTILE, big, huge_shape_payload())
            await h.broadcast(delta(5, b"\x01" * 32, good_payload))
            await wait_for(lambda: rejected_from(a, h.peer_id) >= 3, "the requested snapshot's rejection")
            # (4) a good snapshot, then a delta announced without payload; the fetched payload is bad
            good = header_for(
                HOSTILE,
                "digits",
                good_payload,
                kind="snapshot",
                seq=0,
                arch=layout.arch,
                result=model_digest(zeros),
            )
            server.snapshot = signed(HOSTILE, good, good_payload)
            a._snapshot_wanted.clear()  # the retry interval (5 s) would hold back the next request
            await h.broadcast(delta(6, b"\x02" * 32, good_payload))
            await wait_for(lambda: h.peer_id in a.replicas, "the hostile's good snapshot")
            bad = huge_shape_payload(a._payload_sizes["raw"])
            server.payload = bad
            await h.broadcast(delta(1, model_digest(zeros), bad, inline=False))
            await wait_for(lambda: "delta" in server.requests, "the payload fetch")
            await wait_for(lambda: rejected_from(a, h.peer_id) >= 4, "the fetched payload's rejection")
            # (5) a fetched payload that is the signed one but holds NaN: provably the sender's fault, so
            # it also costs the responder what an invalid gossip message costs (gossipsub's score)
            score = peers[0].transport.peer_score(h.peer_id)  # type: ignore[attr-defined]
            nan = np.zeros(layout.size, np.float32)
            nan[0] = np.nan
            entries = sorted(layout.unflatten(nan).items())
            server.payload = pack([[n, "float32", list(v.shape), v.tobytes()] for n, v in entries])
            await h.broadcast(delta(1, model_digest(zeros), server.payload, inline=False))
            await wait_for(lambda: a.rejections_by_peer[h.peer_id]["non_finite"] >= 1, "the NaN payload")
            await wait_for(
                lambda: peers[0].transport.peer_score(h.peer_id) <= score - 10,  # type: ignore[attr-defined]
                "the responder's penalty",
            )
        assert "delta" in server.requests and server.requests.count("snapshot") >= 3, (
            server.requests,
            a.rejections_by_peer,
        )
        assert [8, 8] == [p.round for p in peers]  # every round ran: nothing took a peer down
        assert 0 == a.replicas[h.peer_id].seq  # no hostile delta was applied
        assert all(rejected_from(a, p.peer_id) == 0 for p in peers[1:])  # the honest one is never blamed


async def test_an_exception_in_a_handler_closes_that_input_only_and_is_logged_once_with_the_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever the decoders do: the engine's entry points made to raise for one neighbour's input."""
    splits = peer_splits("digits", 3, partition_kind="iid", seed=1)
    net = MemoryNetwork()
    async with memory_peers(3, splits, net, scoring_enabled=False, max_round_wait_s=0.5) as peers:
        a, bad = peers[0], peers[2].peer_id
        engine = a.engine

        def failing(method: Callable[..., Any], error: Exception, *, peer_arg: int) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if args[peer_arg] == bad:
                    raise error
                return method(*args, **kwargs)

            return wrapper

        engine.handle_announce = failing(engine.handle_announce, RuntimeError("boom"), peer_arg=1)  # type: ignore[method-assign]
        engine.handle_snapshot = failing(engine.handle_snapshot, TypeError("bad key"), peer_arg=1)  # type: ignore[method-assign]
        engine.accept_gossip = failing(engine.accept_gossip, ValueError("too big"), peer_arg=1)  # type: ignore[method-assign]
        with caplog.at_level(logging.INFO, logger="p2pfl"), trio.fail_after(60):
            await run_all(peers, 5)
            engine._snapshot_wanted[bad] = -1e9  # allow a snapshot request at once
            await a.exchange.fetch(RequestSnapshot(bad, bad))
        assert [5, 5, 5] == [p.round for p in peers]
        assert engine.rejections_by_peer[bad][INTERNAL_ERROR] >= 2
        assert all(rejected_from(engine, p.peer_id) == 0 for p in peers[1:2])
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "p2pfl.peer"]
        kinds = {r.getMessage().split("error=")[1].split(":")[0] for r in errors}
        assert {"ValueError", "TypeError"} <= kinds, [r.getMessage() for r in errors]
        assert all(bad in r.getMessage() for r in errors)
        # once per (peer, type) per interval, not once per message
        assert len(errors) == len({(bad, k) for k in kinds}), [r.getMessage() for r in errors]


async def test_a_crash_of_ours_ends_with_a_critical_line_not_with_peer_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    splits = peer_splits("digits", 1, partition_kind="iid", seed=1)
    net = MemoryNetwork()
    cfg = PeerConfig(network_id="digits", status_interval_s=0)
    peer = Peer(
        cfg,
        learner_for(splits[0], 0),
        Identity(bytes([7]) * 32),
        transport=lambda i: net.open(network_id="digits", seed=i.seed),
    )

    async def bug() -> None:
        raise ZeroDivisionError("a bug of ours")

    raised: BaseException | None = None
    with caplog.at_level(logging.INFO, logger="p2pfl"):
        try:
            async with peer:
                assert peer._nursery is not None
                peer._nursery.start_soon(bug)
                await trio.sleep(5)
        except BaseException as exc:  # the nursery wraps it in a group
            raised = exc
    assert isinstance(raised, BaseExceptionGroup) and raised.subgroup(ZeroDivisionError), raised
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "p2pfl.peer"]
    assert not any("peer stopped" in m for _, m in lines), lines
    assert any(
        lvl == logging.CRITICAL and "peer crashed" in m and "ZeroDivisionError" in m for lvl, m in lines
    )


async def test_a_clean_stop_still_says_peer_stopped_at_info(caplog: pytest.LogCaptureFixture) -> None:
    splits = peer_splits("digits", 1, partition_kind="iid", seed=1)
    net = MemoryNetwork()
    cfg = PeerConfig(network_id="digits", status_interval_s=0)
    with caplog.at_level(logging.INFO, logger="p2pfl"):
        async with Peer(
            cfg,
            learner_for(splits[0], 0),
            Identity(bytes([7]) * 32),
            transport=lambda i: net.open(network_id="digits", seed=i.seed),
        ):
            await trio.sleep(0.1)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "p2pfl.peer"]
    assert any(lvl == logging.INFO and m.startswith("peer stopped") for lvl, m in lines), lines
    assert not any(lvl >= logging.ERROR for lvl, _ in lines), lines


# ---------------------------------------------------------------------------------------- discovery


async def _registry_peer(net: MemoryNetwork, registry: Registry, nursery: trio.Nursery, **cfg: Any) -> Peer:
    reg_t = await nursery.start(_serve_registry, net, registry)
    splits = peer_splits("digits", 1, partition_kind="iid", seed=1)
    config = PeerConfig(
        network_id="digits",
        status_interval_s=0,
        bootstrap=(f"memory/{reg_t}",),
        discover_interval_s=0.2,
        **cfg,
    )
    return Peer(
        config,
        learner_for(splits[0], 0),
        Identity(bytes([9]) * 32),
        transport=lambda i: net.open(network_id="digits", seed=i.seed),
    )


async def _serve_registry(net: MemoryNetwork, registry: Registry, *, task_status: Any) -> None:
    async with net.open(network_id="registry", seed=REGISTRY.seed) as t, trio.open_nursery() as n:
        await n.start(BootstrapService(t, registry, sweep_interval=0.1).run)
        task_status.started(t.peer_id)
        await trio.sleep_forever()


async def test_a_bootstrap_registry_is_never_counted_as_a_learning_neighbour(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Alone with only the registry, a peer with min_neighbours = 1 waits for a real neighbour (here up to
    start_timeout_s, then warns) instead of taking the registry for one and starting at once."""
    net = MemoryNetwork()
    registry = Registry(RegistryConfig(min_ttl=1.0, rate_per_second=1000.0, burst=1000.0))
    async with trio.open_nursery() as nursery:
        peer = await _registry_peer(net, registry, nursery, min_neighbours=1, start_timeout_s=1.0)
        with caplog.at_level(logging.INFO, logger="p2pfl"), trio.fail_after(60):
            async with peer:
                assert 1 == registry.network_size("digits")  # registered: the registry is connected
                assert [f"{REGISTRY.peer_id}"] == peer.transport.connected_peers()
                assert [] == peer.neighbours()
                assert 0 == peer.status()["neighbours"]
                await peer.run(rounds=1)
                assert 0 == peer.reports[0].neighbours
        nursery.cancel_scope.cancel()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("starting with 0 of min_neighbours=1" in m for m in warnings), warnings


async def test_a_clean_stop_unregisters_from_the_registry() -> None:
    net = MemoryNetwork()
    registry = Registry(RegistryConfig(min_ttl=1.0, rate_per_second=1000.0, burst=1000.0))
    async with trio.open_nursery() as nursery:
        peer = await _registry_peer(net, registry, nursery, bootstrap_ttl=3600)
        with trio.fail_after(30):
            async with peer:
                assert 1 == registry.network_size("digits")
            assert 0 == registry.network_size("digits")  # withdrawn at once, not after its ttl
        nursery.cancel_scope.cancel()
