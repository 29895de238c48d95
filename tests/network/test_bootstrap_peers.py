"""Peers that know only a bootstrap registry: discovery, registry outage, rejoin through the peer cache."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.bootstrap.conftest import RegistryProcess, start_registry
from tests.network.cluster import Cluster, free_port
from tests.network.test_cli_peers import test_accuracy_of_checkpoint

pytestmark = pytest.mark.slow


def registry(directory: Path, port: int) -> RegistryProcess:
    # test knobs: short leases so renewals after a registry restart happen within seconds
    return start_registry(directory, "--listen", f"/ip4/127.0.0.1/tcp/{port}", "--min-ttl", "1")


def sections(i: int, n_data: int, addr: str) -> dict[str, dict[str, object]]:
    return {
        "peer": {
            "bootstrap": [addr],
            "bootstrap_ttl": 6,
            "discover_interval_s": 1,
            "min_neighbours": 2,
            "local_steps": 10,
            "round_interval_s": 0.2,
            "max_round_wait_s": 2,
        },
        "learner": {
            "entry": "p2pfl.sim.entry:digits",
            "params": {"peer_index": i % n_data, "num_peers": n_data, "alpha": 0.5, "seed": 3},
        },
    }


def wait_until(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_peers_find_each_other_through_the_registry_and_survive_its_outage(tmp_path: Path) -> None:
    port = free_port()
    reg = registry(tmp_path, port)
    n = 5
    cluster = Cluster(tmp_path, n + 1)
    try:
        for i in range(n + 1):
            cluster.configure(i, sections(i, n, reg.addr))
        cluster.start_many(list(range(n)))
        cluster.wait_rounds(list(range(n)), 10, timeout=120)
        for i in range(n):
            s = cluster.status(i)
            assert s is not None and s["neighbours"] >= 2 and s["replicas"] >= 2, s

        # the registry dies: learning goes on
        reg.proc.send_signal(signal.SIGKILL)
        reg.proc.wait(10)
        before = {i: cluster.status(i)["round"] for i in range(n)}  # type: ignore[index]
        cluster.wait_rounds(list(range(n)), max(before.values()) + 10, timeout=120)

        # a peer restarts while every registry is down: it rejoins through its peer cache
        assert 0 == cluster.stop(4)
        assert (cluster.specs[4].state / "peer-cache.json").exists()
        cluster.start(4)
        wait_until(
            lambda: (s := cluster.status(4)) is not None and s["neighbours"] >= 2, 60, "peer 4 to rejoin"
        )
        round4 = cluster.status(4)["round"]  # type: ignore[index]
        cluster.wait_rounds([4], round4 + 5, timeout=60)

        # the registry comes back (same key, same port): a brand-new peer can join again
        reg = registry(tmp_path, port)
        cluster.start(n)
        wait_until(
            lambda: (s := cluster.status(n)) is not None and s["neighbours"] >= 2, 60, "the new peer to join"
        )
        cluster.wait_rounds([n], 5, timeout=60)
        assert cluster.stop_many(list(range(n + 1))) == [0] * (n + 1)
    finally:
        cluster.stop_all()
        reg.stop()
    accs = [test_accuracy_of_checkpoint(cluster.specs[i].state, i, n) for i in range(n)]
    assert min(accs) >= 0.85, accs


def test_rotating_peers_change_links_through_the_registry_and_keep_learning(tmp_path: Path) -> None:
    """Link rotation over libp2p with registry discovery (``[peer] rotate_every``): discovery dials up to
    ``rotate_degree``, not ``max_neighbours``; rotations dial the registry's records and close the oldest
    links; learning goes on."""
    port = free_port()
    reg = registry(tmp_path, port)
    n = 5
    cluster = Cluster(tmp_path, n)
    try:
        for i in range(n):
            conf = sections(i, n, reg.addr)
            conf["peer"] |= {"rotate_every": 2, "rotate_degree": 2, "min_neighbours": 1}
            cluster.configure(i, conf)
        cluster.start_many(list(range(n)))
        cluster.wait_rounds(list(range(n)), 14, timeout=180)
        statuses = [cluster.status(i) for i in range(n)]
        for s in statuses:
            assert s is not None and s["rotation"] is not None, statuses
            assert s["rotation"]["degree"] == 2
            assert s["rotation"]["dialled"] + s["rotation"]["closed"] >= 1, statuses
        # a complete graph would be 4 neighbours each; the rotation degree keeps the mean near 2
        degrees = [s["neighbours"] for s in statuses if s is not None]
        assert sum(degrees) / n <= 3.2, degrees
        assert sum(s["rotation"]["dialled"] for s in statuses if s is not None) >= 3, statuses
        assert cluster.stop_many(list(range(n))) == [0] * n
    finally:
        cluster.stop_all()
        reg.stop()
    accs = [test_accuracy_of_checkpoint(cluster.specs[i].state, i, n) for i in range(n)]
    assert min(accs) >= 0.8, accs
