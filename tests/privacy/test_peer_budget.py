"""A peer with DP over the in-memory network: it never publishes past its budget, says so once, keeps
learning from its neighbours, and shows epsilon in its status, version log and headers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import trio
import trio.testing

from p2pfl.learner import Dataset, NumpySoftmaxLearner
from p2pfl.privacy import Mechanism, PrivacyConfig, epsilon
from p2pfl.protocol import Publish
from p2pfl.state import read_log, verify_log
from p2pfl.transport.memory import MemoryNetwork
from p2pfl.wire import open_envelope
from tests.test_peer import inline, memory_peer


def toy_learner(seed: int, n: int = 64) -> NumpySoftmaxLearner:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    data = Dataset(x, y)
    return NumpySoftmaxLearner(data, data, 2, lr=0.1, batch_size=8, seed=seed)


def budget_for(rounds: int, sigma: float, q: float, steps: int) -> float:
    """An epsilon budget that ``rounds`` rounds fit and ``rounds + 1`` do not."""
    mech = Mechanism("record", sigma, q, steps)
    return (epsilon(mech, rounds, 1e-5) + epsilon(mech, rounds + 1, 1e-5)) / 2


async def test_the_peer_never_publishes_past_its_budget_and_keeps_learning_from_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    # (the MockClock: once a stops publishing, each of b's steps waits out max_round_wait_s for it)
    net = MemoryNetwork()
    steps, sigma = 5, 1.0
    dp_learner = toy_learner(1)
    budget = budget_for(3, sigma, dp_learner.dp_sample_rate(), steps)
    privacy = PrivacyConfig(mode="record", epsilon=budget, noise_multiplier=sigma, clip_norm=1.0)
    a = memory_peer(
        0, dp_learner, net, run_sync=inline, local_steps=steps, privacy=privacy, state_dir=tmp_path,
        scoring_enabled=False, min_neighbours=0, mix_scope="all",
    )  # fmt: skip
    b = memory_peer(
        1, toy_learner(2), net, run_sync=inline, local_steps=steps, scoring_enabled=False,
        min_neighbours=0, mix_scope="all",
    )  # fmt: skip
    received: list[bytes] = []
    caplog.set_level(logging.WARNING, logger="p2pfl.peer")
    a.exchange.observers.append(
        lambda action: received.append(action.envelope) if isinstance(action, Publish) else None
    )
    async with a, b:
        await a.connect(f"memory/{b.peer_id}")
        published = []
        for _ in range(6):
            report = await a.step()
            published.append(report.published)
            await b.step()  # b publishes a new version every round: a has something to learn from
        own_after = a.params()
        await a.step()
        learned = not all(np.array_equal(own_after[k], a.params()[k]) for k in own_after)
        status = a.status()["privacy"]
    assert published == [True, True, True, False, False, False]
    assert a.engine.seq == 3  # three versions, never a fourth
    assert learned  # still mixing b's versions after the budget is spent
    assert status["exhausted"] and status["published"] == 3
    assert status["epsilon_spent"] <= budget
    lines = [r for r in caplog.records if "privacy budget spent" in r.getMessage()]
    assert len(lines) == 1  # logged once, clearly
    records = read_log(tmp_path)
    versions = [r for r in records if r.event == "version"]
    assert [r.seq for r in versions] == [1, 2, 3]
    eps = [r.metrics["privacy_epsilon"] for r in versions]
    assert eps == sorted(eps) and eps[-1] <= budget
    assert [r.event for r in records].count("privacy_exhausted") == 1
    assert verify_log(tmp_path).ok
    headers = [open_envelope(e).header for e in received]
    assert [h.seq for h in headers] == [1, 2, 3]
    for h, eps_logged in zip(headers, eps, strict=True):
        assert h.dp is not None and h.dp.mode == "record"
        assert h.dp.epsilon == pytest.approx(eps_logged) and h.dp.epsilon <= budget
        assert h.dp.noise_multiplier == sigma and h.dp.delta == 1e-5 and h.dp.clip_norm == 1.0
        # the training loss and sample count are functions of the private data: not published under DP
        assert h.meta.loss is None and h.meta.samples is None
