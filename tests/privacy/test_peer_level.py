"""Peer-level DP: the published delta is clipped to the norm bound and noised with the calibrated scale,
while the peer's own model keeps its un-noised training; the metrics gauge reads the epsilon spent."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from p2pfl.peer import Peer, PeerConfig
from p2pfl.privacy import PrivacyConfig, privatise_delta
from p2pfl.protocol import Publish
from p2pfl.transport.memory import MemoryNetwork
from p2pfl.wire import decode_tensors, open_envelope
from tests.privacy.test_peer_budget import toy_learner
from tests.test_peer import inline


def test_the_published_delta_is_clipped_to_the_bound_whatever_the_training_did() -> None:
    rng = np.random.default_rng(0)
    public = {"a": np.zeros((3, 4), np.float32), "b": np.ones(5, np.float32)}
    trained = {"a": rng.normal(0, 50, (3, 4)).astype(np.float32), "b": np.full(5, -40.0, np.float32)}
    out = privatise_delta(trained, public, clip_norm=0.5, noise_multiplier=0.0, rng=rng)
    delta = np.concatenate([(out[k] - public[k]).ravel() for k in public])
    full = np.concatenate([(trained[k] - public[k]).ravel() for k in public])
    assert np.linalg.norm(delta) == pytest.approx(0.5, rel=1e-5)  # scaled down to the bound
    assert np.allclose(
        delta / np.linalg.norm(delta), full / np.linalg.norm(full), atol=1e-5
    )  # same direction
    small = {k: public[k] + 1e-3 for k in public}
    kept = privatise_delta(small, public, clip_norm=0.5, noise_multiplier=0.0, rng=rng)
    assert all(np.allclose(kept[k], small[k]) for k in public)  # within the bound: unchanged


def test_the_noise_has_standard_deviation_sigma_times_clip() -> None:
    rng = np.random.default_rng(1)
    public = {"w": np.zeros(100_000, np.float32)}
    out = privatise_delta(public, public, clip_norm=0.2, noise_multiplier=3.0, rng=rng)
    assert np.std(out["w"]) == pytest.approx(0.6, rel=0.02)


async def test_a_peer_level_peer_publishes_clipped_noised_deltas_and_exports_epsilon() -> None:
    net = MemoryNetwork()
    privacy = PrivacyConfig(mode="peer", epsilon=40.0, noise_multiplier=1.0, clip_norm=0.01)
    config = PeerConfig(
        network_id="digits", status_interval_s=0, local_steps=20, min_neighbours=0, privacy=privacy
    )
    registry = CollectorRegistry()
    learner = toy_learner(3)
    peer = Peer(
        config, learner, transport=lambda i: net.open(network_id="digits", seed=i.seed), run_sync=inline,
        metrics=registry,
    )  # fmt: skip
    sent: list[bytes] = []
    peer.exchange.observers.append(lambda a: sent.append(a.envelope) if isinstance(a, Publish) else None)
    async with peer:
        start = learner.get_params()
        report = await peer.step()
        trained_norm = np.sqrt(sum(((learner.get_params()[k] - start[k]) ** 2).sum() for k in start))
        spent = registry.get_sample_value("p2pfl_privacy_epsilon_spent")
        status = peer.status()["privacy"]
    env = open_envelope(sent[0])
    assert env.header.dp is not None and env.header.dp.mode == "peer"
    assert env.payload is not None
    delta = decode_tensors(env.payload)
    flat = np.concatenate([v.ravel() for v in delta.values()])
    d = flat.size
    # clipped to 0.01, plus noise of std 1.0 * 0.01 per coordinate (d = 10 parameters)
    assert np.linalg.norm(flat) < 0.01 + 5 * 0.01 * np.sqrt(d)
    assert trained_norm > 2 * (0.01 + 5 * 0.01 * np.sqrt(d))  # training moved far more than what is published
    assert report.privacy_epsilon == pytest.approx(env.header.dp.epsilon)
    assert spent == pytest.approx(status["epsilon_spent"], rel=1e-5) and spent > 0
