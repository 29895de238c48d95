"""A secure-aggregation group of real ``p2pfl peer`` processes on 127.0.0.1 over ``/p2pfl/secagg/1``."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from p2pfl.state import load_checkpoint
from tests.network.cluster import Cluster
from tests.network.test_cli_peers import full_mesh, learner_sections, test_accuracy_of_checkpoint

pytestmark = pytest.mark.slow


def _group(cluster: Cluster, *, advertise_timeout_s: float, phase_timeout_s: float) -> dict[str, Any]:
    """The ``[secagg]`` section of a group of every peer of ``cluster``, threshold 3."""
    return {
        "enabled": True,
        "members": [s.identity.peer_id for s in cluster.specs],
        "threshold": 3,
        "advertise_timeout_s": advertise_timeout_s,
        "phase_timeout_s": phase_timeout_s,
    }


def test_five_members_average_securely_and_survive_a_dropout(tmp_path: Path) -> None:
    """Five members, threshold 3, full mesh: every group round completes (no failure), the members end on
    the same model (the group mean, which is all any of them publishes) and learn; one member stopped
    mid-run does not stop the four others from completing their rounds. It stops late (round 5 of 8): each
    round after the dropout waits out the advertise timeout for it, and two or three such rounds show what
    five would."""
    n, rounds, drop_at = 5, 8, 5
    cluster = Cluster(tmp_path, n)
    secagg = _group(cluster, advertise_timeout_s=20.0, phase_timeout_s=8.0)
    try:
        for i in range(n):
            sections = learner_sections(i, n, static_peers=full_mesh(cluster, i), rounds=rounds)
            cluster.configure(i, {**sections, "secagg": dict(secagg)})
        cluster.start_many(list(range(n)))
        cluster.wait_rounds(list(range(n)), drop_at, timeout=240)
        assert cluster.stop(n - 1, signal.SIGTERM, timeout=60) == 0  # stops after its current round
        cluster.wait_rounds(list(range(n - 1)), rounds, timeout=300)
        time.sleep(2)  # one more status write after the last round
        statuses = [cluster.status(i) for i in range(n - 1)]
        assert [0] * (n - 1) == cluster.stop_many(list(range(n - 1)))
    finally:
        cluster.stop_all()
    for s in statuses:
        assert s is not None and s["secagg"] is not None, statuses
        group = s["secagg"]
        assert group["failures"] == {}, cluster.explain()
        assert group["completed"] == rounds, statuses
        assert group["last_survivors"] == n - 1, statuses  # the last rounds ran without the stopped member
        assert group["channel"].get("refused_not_member", 0) == 0, statuses
    models = []
    for i in range(n - 1):
        ckpt = load_checkpoint(cluster.specs[i].state)
        assert ckpt is not None and ckpt.round == rounds
        models.append(np.concatenate([ckpt.own[k].ravel() for k in sorted(ckpt.own)]))
    for m in models[1:]:  # every member's model is the same group mean (fixed-point error ~1e-6)
        np.testing.assert_allclose(m, models[0], atol=1e-5)
    accs = [test_accuracy_of_checkpoint(cluster.specs[i].state, i, n) for i in range(n - 1)]
    assert min(accs) >= 0.8, accs


def test_a_member_started_late_joins_the_groups_rounds(tmp_path: Path) -> None:
    """Four members start; the fifth comes up once they are two rounds in, with its own round counter at
    0. It joins the group's round numbers (its status's group round is past its own rounds) and completes
    group rounds with all five; the four never fail a group round (they wait at most the advert timeout for
    it, then go on without it)."""
    n, late = 5, 4
    cluster = Cluster(tmp_path, n)
    secagg = _group(cluster, advertise_timeout_s=10.0, phase_timeout_s=6.0)
    try:
        for i in range(n):
            rounds = 4 if i == late else 14
            sections = learner_sections(i, n, static_peers=full_mesh(cluster, i), rounds=rounds)
            sections["peer"]["min_neighbours"] = n - 2 if i != late else n - 1
            cluster.configure(i, {**sections, "secagg": dict(secagg)})
        cluster.start_many(list(range(n - 1)))
        cluster.wait_rounds(list(range(n - 1)), 2, timeout=240)
        cluster.start(late)
        cluster.wait_rounds([late], 4, timeout=300)
        time.sleep(2)  # one more status write after its last round
        status = cluster.status(late)
        others = [cluster.status(i) for i in range(n - 1)]
    finally:
        cluster.stop_all()
    assert status is not None and status["secagg"] is not None, cluster.explain()
    group = status["secagg"]
    assert group["completed"] >= 2, (group, cluster.explain([late]))
    assert group["last_survivors"] == n, group
    assert group["last_round"] > 4, group  # the group's numbers, not its own round counter
    for s in others:
        assert s is not None and s["secagg"] is not None
        assert s["secagg"]["failures"] == {}, s["secagg"]
