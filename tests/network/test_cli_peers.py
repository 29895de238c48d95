"""Real peer processes started through the CLI on 127.0.0.1, talking libp2p."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from p2pfl.learner import NumpySoftmaxLearner
from p2pfl.sim.data import peer_splits
from p2pfl.state import load_checkpoint, verify_log
from tests.network.cluster import Cluster

pytestmark = pytest.mark.slow

DATA = {"alpha": 0.5, "seed": 3}


def learner_sections(i: int, n: int, **peer: object) -> dict[str, dict[str, object]]:
    return {
        "peer": {"local_steps": 10, "min_neighbours": n - 1, **peer},
        "learner": {"entry": "p2pfl.sim.entry:digits", "params": {"peer_index": i, "num_peers": n, **DATA}},
    }


def test_accuracy_of_checkpoint(state: Path, i: int, n: int) -> float:
    split = peer_splits("digits", n, partition_kind="dirichlet", **DATA)[i]  # type: ignore[arg-type]
    ckpt = load_checkpoint(state)
    assert ckpt is not None
    learner = NumpySoftmaxLearner(split.train, split.val, split.n_classes, hidden=32)
    acc = learner.evaluate_on(split.test, ckpt.own).accuracy
    assert acc is not None
    return acc


test_accuracy_of_checkpoint.__test__ = False  # type: ignore[attr-defined]


def full_mesh(cluster: Cluster, i: int) -> list[str]:
    return [s.addr for s in cluster.specs if s.index != i]


def test_four_cli_peers_learn_non_iid_digits_together(tmp_path: Path) -> None:
    n, rounds = 4, 80
    cluster = Cluster(tmp_path, n)
    try:
        for i in range(n):
            cluster.configure(i, learner_sections(i, n, static_peers=full_mesh(cluster, i), rounds=rounds))
        # started together, as an operator's peers are: the lower peer id of each pair dials first, and a link
        # whose pubsub state a resync left out of step heals (docs/benchmarks.md, "Links that never healed");
        # before both, one CI-like run left peers 0 and 2 not counting each other as neighbours at the end
        cluster.start_many(list(range(n)))
        cluster.wait_rounds(list(range(n)), rounds, timeout=240)
        statuses = [cluster.status(i) for i in range(n)]
        assert all(s is not None and s["neighbours"] == n - 1 for s in statuses), cluster.explain()
        assert [0] * n == cluster.stop_many(list(range(n)))  # SIGTERM: clean exit
    finally:
        cluster.stop_all()
    accs = [test_accuracy_of_checkpoint(cluster.specs[i].state, i, n) for i in range(n)]
    assert min(accs) >= 0.93, accs
    for spec in cluster.specs:
        report = verify_log(spec.state, spec.identity.peer_id)
        assert report.ok and report.last_seq == rounds, report


def test_kill_9_then_restart_resumes_from_checkpoint_and_catches_up(tmp_path: Path) -> None:
    n = 3
    cluster = Cluster(tmp_path, n)
    try:
        for i in range(n):
            cluster.configure(
                i, learner_sections(i, n, static_peers=full_mesh(cluster, i), round_interval_s=0.2)
            )
            cluster.start(i)
        cluster.wait_rounds([0, 1, 2], 5, timeout=120)
        assert -signal.SIGKILL == cluster.stop(2, signal.SIGKILL)
        before = load_checkpoint(cluster.specs[2].state)
        assert before is not None
        cluster.wait_rounds([0, 1], before.round + 5, timeout=120)  # the others keep learning without it
        cluster.start(2)
        cluster.wait_rounds([2], before.round + 5, timeout=120)
        after = cluster.status(2)
        assert after is not None and after["replicas"] == 2, cluster.explain()
        restarted = load_checkpoint(cluster.specs[2].state)
        assert restarted is not None and restarted.seq > before.seq
        # its neighbours caught up with its new versions (snapshot after the gap, then deltas)
        for i in (0, 1):
            s = cluster.status(i)
            assert s is not None and s["rejected"].get("result_mismatch", 0) == 0, cluster.explain()
        cluster.stop_many(list(range(n)))
    finally:
        cluster.stop_all()
    report = verify_log(cluster.specs[2].state)
    assert report.ok, report.problem
    assert "resumed from checkpoint" in cluster.log(2) or report.records > before.seq


def test_two_networks_never_mix_models(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 4)
    try:
        for i in range(4):
            net = "alpha" if i < 2 else "beta"
            others = [s.addr for s in cluster.specs if s.index != i]  # everyone dials everyone
            sections = learner_sections(i % 2, 2, static_peers=others, round_interval_s=0.1, network_id=net)
            cluster.configure(i, sections)
            cluster.start(i)
        cluster.wait_rounds([0, 1, 2, 3], 8, timeout=120)
        for i in range(4):
            s = cluster.status(i)
            assert s is not None
            assert 1 == s["replicas"], s  # only the one peer of its own network
            assert 0 == s["rejected"].get("wrong_network", 0) or s["replicas"] == 1
        cluster.stop_many(list(range(4)))
    finally:
        cluster.stop_all()
