"""A peer finds the neighbours whose model answers one class its own data lack (p2pfl.scoring.specialist)
from its learner's predictions, and files them under the version evaluated; the learners say what they
predicted."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

import numpy as np
import trio

from p2pfl.learner import Dataset, NumpySoftmaxLearner
from p2pfl.protocol import ValLossCache
from p2pfl.scoring import ScoringConfig
from p2pfl.transport.memory import MemoryNetwork
from simulations.data import load
from tests.protocol.test_engine import Net, engine, train_step
from tests.test_peer import link, memory_peer, run_all


def test_the_numpy_learner_says_what_it_predicted() -> None:
    x, y, n_classes = load("digits", 0)
    learner = NumpySoftmaxLearner(
        Dataset(x[:200], y[:200]), Dataset(x[200:260], y[200:260]), n_classes, seed=1
    )
    learner.train(30)
    result = learner.evaluate()
    assert result.predicted is not None and len(result.predicted) == n_classes
    assert sum(result.predicted) == result.samples == 60
    assert result.accuracy is not None
    # the accuracy is the share of the answers that were right: at most the matching counts allow
    assert result.accuracy * 60 <= sum(
        min(result.predicted[c], int(np.sum(y[200:260] == c))) for c in range(10)
    )


def test_a_specialist_flag_is_filed_under_the_version_evaluated() -> None:
    a, b = engine(1), engine(2)
    net = Net([a, b])
    net.run(a, a.finish_round(train_step(a, 0.5), 0).actions)
    cache = ValLossCache()
    jobs = cache.plan(b.mixing_candidates(0))
    cache.record(jobs, [5.0], [True])
    assert cache.specialists(b.mixing_candidates(0)) == {a.peer_id}
    net.run(a, a.finish_round(train_step(a, 0.5), 1).actions)  # a newer version, not evaluated yet
    assert cache.specialists(b.mixing_candidates(1)) == frozenset()
    again = cache.plan(b.mixing_candidates(1))
    cache.record(again, [0.3])  # evaluated, no flags given: not a specialist
    assert cache.specialists(b.mixing_candidates(1)) == frozenset()


async def test_a_peer_flags_the_neighbour_that_only_knows_a_class_it_lacks() -> None:
    """A holds digits 0 and 6, B digit 1 only (a Dirichlet 0.1 split does this): B's trained model answers
    1 to A's samples, and A finds it a specialist; C, holding 0, 1 and 6, is flagged by nobody."""
    x, y, n_classes = load("digits", 0)

    def data(classes: tuple[int, ...], start: int) -> tuple[Dataset, Dataset]:
        idx = np.flatnonzero(np.isin(y, classes))[start : start + 120]
        return Dataset(x[idx[:100]], y[idx[:100]]), Dataset(x[idx[100:]], y[idx[100:]])

    net = MemoryNetwork()
    scoring = replace(ScoringConfig(), specialist_share=0.9)
    async with AsyncExitStack() as stack:
        peers = []
        for i, classes in enumerate(((0, 6), (1,), (0, 1, 6))):
            train, val = data(classes, 0)
            learner = NumpySoftmaxLearner(train, val, n_classes, seed=i)
            peer = memory_peer(i, learner, net, local_steps=20, max_round_wait_s=0.3, scoring=scoring)
            peers.append(await stack.enter_async_context(peer))
        a, b, c = peers
        await link(a, b)
        await link(a, c)
        scorer = a.engine.scorer
        assert scorer is not None
        evaluate, passed = scorer.evaluate, []

        def spy(*args: Any, **kwargs: Any) -> Any:  # what A's round hands its scorer
            passed.append(frozenset(kwargs.get("specialists", ())))
            return evaluate(*args, **kwargs)

        scorer.evaluate = spy  # type: ignore[method-assign]
        with trio.fail_after(60):
            await run_all(peers, 3)
    flagged = frozenset().union(*passed)
    assert b.peer_id in flagged and c.peer_id not in flagged
