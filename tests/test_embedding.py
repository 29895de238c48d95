"""Embedding a peer in a host application (docs/embedding.md): the public names, PeerHandle from threads and
from asyncio, TorchLearner over the memory transport, the runnable examples and the operator's TOML example.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

import p2pfl
from p2pfl.config import parse_config
from p2pfl.sim.data import Split, peer_splits

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "docs" / "examples").glob("[!_]*.py"))


def numpy_learner(split: Split, seed: int) -> p2pfl.NumpySoftmaxLearner:
    return p2pfl.NumpySoftmaxLearner(split.train, split.val, split.n_classes, hidden=32, seed=seed)


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


# ------------------------------------------------------------------------------------- public names


def test_import_p2pfl_is_cheap_and_exports_the_public_names() -> None:
    code = (
        "import sys, p2pfl\n"
        "watch = {'torch', 'libp2p', 'sklearn', 'trio'}\n"
        "heavy = lambda: sorted({m.split('.')[0] for m in sys.modules} & watch)\n"
        "print('bare', heavy())\n"
        "for name in p2pfl.__all__: getattr(p2pfl, name)\n"
        "print('all', heavy())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO, check=True
    ).stdout.splitlines()
    assert out == ["bare []", "all ['trio']"]  # the peer needs trio; torch and libp2p wait until used


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert list(p2pfl.__all__) == sorted(p2pfl.__all__)
    for name in p2pfl.__all__:
        assert getattr(p2pfl, name) is not None, name
        assert name in dir(p2pfl)
    from p2pfl.peer import Peer, PeerConfig, PeerHandle
    from p2pfl.transport.memory import MemoryNetwork

    assert (p2pfl.Peer, p2pfl.PeerConfig, p2pfl.PeerHandle) == (Peer, PeerConfig, PeerHandle)
    assert p2pfl.MemoryNetwork is MemoryNetwork
    for name in ("AggregationError", "ConfigError", "DiscoveryError", "IdentityError", "StateError"):
        assert issubclass(getattr(p2pfl, name), p2pfl.P2PFLError)
    assert issubclass(p2pfl.TransportError, p2pfl.P2PFLError)
    assert issubclass(p2pfl.WireError, p2pfl.P2PFLError)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = p2pfl.Nope  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------- PeerHandle


def test_two_peer_handles_over_libp2p_learn_and_stop_cleanly() -> None:
    splits = peer_splits("digits", 2, partition_kind="iid", seed=0)
    rounds = 6
    config = p2pfl.PeerConfig(
        network_id="embed-test",
        local_steps=10,
        round_interval_s=0.15,  # slow enough that polling sees the rounds go by
        max_round_wait_s=2.0,
        status_interval_s=0,
    )
    a = p2pfl.PeerHandle.start(config, numpy_learner(splits[0], 0), rounds=rounds, timeout=60)
    try:
        b = p2pfl.PeerHandle.start(config, numpy_learner(splits[1], 1), rounds=rounds, timeout=60)
        try:
            assert a.listen_addrs[0].startswith("/ip4/127.0.0.1/tcp/")
            assert b.connect(a.listen_addrs[0]) == a.peer_id
            seen: list[int] = []

            def finished() -> bool:
                seen.append(a.status()["round"])
                return bool(seen[-1] >= rounds and b.status()["round"] >= rounds)

            wait_until(finished, 60, "both peers to finish their rounds")
            assert seen == sorted(seen) and len(set(seen)) >= 3, seen  # progressing, seen from this thread
            for handle in (a, b):
                status = handle.status()
                assert (status["round"], status["seq"], status["neighbours"]) == (rounds, rounds, 1)
                assert status["val_accuracy"] > 0.8
                assert status["bytes_received"] > 0 and status["rejected"] == {}
                params = handle.params()
                assert set(params) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
                assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in params.values())
                assert params["fc1.weight"].shape == (64, 32)
            assert not a.wait(0)  # rounds done, still serving its neighbours until stopped
            t0 = time.monotonic()
            b.stop(timeout=20)
            a.stop(timeout=20)
            stop_s = time.monotonic() - t0
        finally:
            b.stop(timeout=20)  # idempotent
    finally:
        a.stop(timeout=20)
    assert stop_s < 10, stop_s
    assert a.wait(0) and b.wait(0)
    with pytest.raises(p2pfl.P2PFLError, match="not running"):
        a.status()


def test_peer_handle_raises_the_start_up_error(tmp_path: Path) -> None:
    split = peer_splits("digits", 1, partition_kind="iid", seed=0)[0]
    net = p2pfl.MemoryNetwork()
    config = p2pfl.PeerConfig(
        network_id="embed-test", local_steps=2, state_dir=tmp_path, min_neighbours=0, status_interval_s=0
    )

    def transport(identity: p2pfl.Identity) -> Any:
        return net.open(network_id="embed-test", seed=identity.seed)

    with p2pfl.PeerHandle.start(
        config, numpy_learner(split, 0), p2pfl.Identity(bytes([1]) * 32), rounds=1, transport=transport
    ) as handle:
        wait_until(lambda: handle.status()["round"] == 1, 30, "one round")
    with pytest.raises(p2pfl.ConfigError, match="belongs to peer"):
        p2pfl.PeerHandle.start(
            config, numpy_learner(split, 0), p2pfl.Identity(bytes([2]) * 32), transport=transport, timeout=30
        )


def test_peer_handle_from_an_asyncio_event_loop() -> None:
    split = peer_splits("digits", 1, partition_kind="iid", seed=0)[0]
    net = p2pfl.MemoryNetwork()
    config = p2pfl.PeerConfig(
        network_id="embed-test",
        local_steps=5,
        min_neighbours=0,  # alone: no neighbour to wait for before the first round...
        max_round_wait_s=0.05,  # ...nor (for long) between rounds
        status_interval_s=0,
    )

    async def app() -> tuple[list[int], int]:
        handle = await asyncio.to_thread(
            p2pfl.PeerHandle.start,
            config,
            numpy_learner(split, 0),
            rounds=5,
            transport=lambda identity: net.open(network_id="embed-test", seed=identity.seed),
            timeout=30,
        )
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        tick_task = asyncio.create_task(ticker())
        rounds: list[int] = []
        try:
            async with asyncio.timeout(30):
                while not rounds or rounds[-1] < 5:
                    status = await asyncio.to_thread(handle.status)
                    rounds.append(status["round"])
                    await asyncio.sleep(0.02)
            assert handle.status()["round"] == 5  # direct calls are fine too: quick and thread-safe
            assert set(await asyncio.to_thread(handle.params)) == {
                "fc1.weight",
                "fc1.bias",
                "fc2.weight",
                "fc2.bias",
            }
        finally:
            await asyncio.to_thread(handle.stop, 20)
            tick_task.cancel()
        return rounds, ticks

    rounds, ticks = asyncio.run(app())
    assert rounds == sorted(rounds) and rounds[-1] == 5
    assert ticks >= 3  # the asyncio loop kept running while the peer worked


# -------------------------------------------------------------------------------- TorchLearner


async def test_torch_learner_peers_learn_over_the_memory_transport() -> None:
    torch = pytest.importorskip("torch")
    splits = peer_splits("digits", 2, partition_kind="iid", seed=1)

    def learner(split: Split, seed: int) -> p2pfl.TorchLearner:
        torch.manual_seed(0)  # the same initial model on every peer
        module = torch.nn.Sequential(
            torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, split.n_classes)
        )
        return p2pfl.TorchLearner(
            module,
            torch.nn.functional.cross_entropy,
            (torch.from_numpy(split.train.x), torch.from_numpy(split.train.y)),
            (torch.from_numpy(split.val.x), torch.from_numpy(split.val.y)),
            seed=seed,
        )

    net = p2pfl.MemoryNetwork()
    config = p2pfl.PeerConfig(
        network_id="torch-test", local_steps=10, max_round_wait_s=2.0, status_interval_s=0
    )
    peers = [
        p2pfl.Peer(
            config,
            learner(split, i),
            p2pfl.Identity(bytes([i + 1]) * 32),
            transport=lambda ident: net.open(network_id="torch-test", seed=ident.seed),
        )
        for i, split in enumerate(splits)
    ]
    test = splits[0].test
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two peers train at once: intra-op threads would oversubscribe the cores
    try:
        async with peers[0] as a, peers[1] as b:
            await a.connect(f"memory/{b.peer_id}")
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(a.run, 8)
                    nursery.start_soon(b.run, 8)
            for peer in (a, b):
                assert [r.mixed for r in peer.reports[1:]] == [1] * 7  # mixed the other's model every round
                module = peer.learner.module  # type: ignore[attr-defined]
                with torch.no_grad():
                    predicted = module(torch.from_numpy(test.x)).argmax(dim=1).numpy()
                accuracy = float((predicted == test.y).mean())
                assert accuracy >= 0.85, accuracy
                assert peer.status()["rejected"] == {}
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------- docs


def test_the_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"trio_two_peers.py", "threaded_handle.py", "asyncio_app.py", "custom_learner.py"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(example: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(example)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "acc" in proc.stdout


def test_the_operators_toml_example_is_complete_and_valid(tmp_path: Path) -> None:
    """docs/peer.md's full example parses, and names every key the loader accepts."""
    from p2pfl.aggregation import AggregationConfig
    from p2pfl.config.loader import NODE_KEYS
    from p2pfl.config.schema import toml_keys
    from p2pfl.privacy import PrivacyConfig
    from p2pfl.protocol.ratelimit import RateConfig
    from p2pfl.rollout import RolloutConfig
    from p2pfl.scoring import ScoringConfig
    from p2pfl.secagg.config import SecAggConfig

    text = (REPO / "docs" / "peer.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    full = max(blocks, key=len)
    import tomllib

    data = tomllib.loads(full)
    node = parse_config(data, tmp_path)
    assert node.peer.network_id and node.learner_entry
    keys = {(section, key) for section, table in data.items() for key in table}
    expected = set(toml_keys()) | {("peer", k) for k in NODE_KEYS}
    expected |= {("learner", "entry"), ("learner", "params")}
    expected |= {("aggregation", f) for f in AggregationConfig.__dataclass_fields__}
    expected |= {("rollout", f) for f in RolloutConfig.__dataclass_fields__}
    expected |= {("rates", f) for f in RateConfig.__dataclass_fields__}
    expected |= {("secagg", f) for f in SecAggConfig.__dataclass_fields__}
    expected |= {("privacy", f) for f in PrivacyConfig.__dataclass_fields__}
    expected |= {("scoring", f) for f in ScoringConfig.__dataclass_fields__} | {
        ("scoring", "enabled"),
        ("scoring", "val_scoring"),
    }
    # keys that have no TOML form (None-valued defaults) are documented as comments
    commented = set(re.findall(r"^# ?(\w+) = ", full, re.M))
    missing = {(s, k) for s, k in expected if (s, k) not in keys and k not in commented}
    assert not missing, sorted(missing)
