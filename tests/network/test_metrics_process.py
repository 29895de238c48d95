"""A running ``p2pfl peer`` process scraped over HTTP: every metric is there and moves with its event.

Two peer processes learn together on 127.0.0.1; peer 0 serves ``[metrics] listen`` and logs JSON lines to a
file. The test scrapes it with ``urllib`` and parses the exposition with ``prometheus_client``'s parser, and
sends it a forged envelope from a libp2p host of its own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import trio

from p2pfl.identity import Identity
from p2pfl.logs import EVENTS
from p2pfl.wire import seal
from tests.hostile_bytes import header_for
from tests.metrics.test_peer_metrics import FAMILIES, QUALITY_FAMILIES
from tests.network.cluster import REPO, Cluster, free_port

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> tuple[Samples, set[str]]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    samples: Samples = {}
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, names


def sections(cluster: Cluster, i: int, metrics_port: int | None) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {
        "peer": {
            "local_steps": 5,
            "static_peers": [s.addr for s in cluster.specs if s.index != i],
            "rounds": 10_000,
            "round_interval_s": 0.2,
        },
        "learner": {"entry": "p2pfl.sim.entry:digits", "params": {"peer_index": i, "num_peers": 2}},
    }
    if metrics_port is not None:
        out["metrics"] = {"listen": f"127.0.0.1:{metrics_port}"}
        # the scraped peer rolls its versions out: the first better candidate is promoted at once
        out["rollout"] = {"enabled": True, "shadow_rounds": 0, "promote_after": 1}
    return out


async def send_forged(addr: str, port: int, timeout: float) -> Samples:
    """Publish a forged announcement (signature bit flipped) to the peer at ``addr`` until its metrics count
    it under ``bad_signature`` (the peer subscribes to our topic a moment after we connect); bounded."""
    from p2pfl.transport.libp2p import Libp2pTransport

    forger = Identity(bytes([0xAB]) * 32)
    env = seal(forger, header_for(forger, "digits", b"x" * 16), None)
    forged = env[:-2] + bytes([env[-2] ^ 1]) + env[-1:]
    key = ("p2pfl_envelopes_rejected_total", (("reason", "bad_signature"),))
    before = (await trio.to_thread.run_sync(scrape, port))[0].get(key, 0.0)
    async with Libp2pTransport.open(seed=forger.seed, network_id="digits") as t:
        await t.connect(addr)
        with trio.fail_after(timeout):
            for _ in range(int(timeout * 2)):
                await t.broadcast(forged)
                await trio.sleep(0.5)
                samples = (await trio.to_thread.run_sync(scrape, port))[0]
                if samples.get(key, 0.0) > before:
                    return samples
    raise AssertionError("the forged envelope was never counted")


def test_a_scraped_peer_process_exports_every_metric_and_they_move(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 2, seed_base=40)
    port = free_port()
    log_file = tmp_path / "peer0.jsonl"
    try:
        cluster.configure(0, sections(cluster, 0, port))
        cluster.configure(1, sections(cluster, 1, None))
        cluster.start(0, args=("--log-format", "json", "--log-file", str(log_file)))
        cluster.start(1)
        first, names = scrape(port)
        assert names >= FAMILIES, sorted(FAMILIES - names)
        cluster.wait_rounds([0, 1], 3, timeout=90)
        later = first
        deadline = time.monotonic() + 60
        control = [(f"p2pfl_{d}_bytes_total", (("kind", "libp2p_control"),)) for d in ("sent", "received")]
        # bounded: until two more rounds are in the scrape and the control counters moved. libp2p_control is
        # every wire byte minus the application bytes, and a gossip publish is counted once as sent even when
        # gossipsub delivers it to no one yet, so the difference may stand still for a round or two before the
        # heartbeats' bytes overtake it (the counter never goes down: it keeps its highest value)
        while time.monotonic() < deadline:
            later, _ = scrape(port)
            if later[("p2pfl_rounds_total", ())] >= first[("p2pfl_rounds_total", ())] + 2 and all(
                later[k] > first[k] for k in control
            ):
                break
            time.sleep(0.5)
        for name in (
            "p2pfl_rounds_total",
            "p2pfl_round_duration_seconds_count",
            "p2pfl_train_duration_seconds_count",
            "p2pfl_evaluate_duration_seconds_count",
            "p2pfl_envelopes_accepted_total",
            "p2pfl_round",
        ):
            assert later[(name, ())] > first[(name, ())], name
        for kind in ("gossip", "libp2p_control"):
            for direction in ("sent", "received"):
                key = (f"p2pfl_{direction}_bytes_total", (("kind", kind),))
                assert later[key] > first[key], key
        assert later[("p2pfl_neighbours", (("state", "connected"),))] == 1
        assert later[("p2pfl_validation_accuracy", ())] > 0
        assert later[("p2pfl_metrics_errors_total", ())] == 0
        # quality deltas and the rollout: the gauges are there, the promotion counter moves (bounded wait)
        promoted, names = scrape(port)
        deadline = time.monotonic() + 60
        while promoted[("p2pfl_rollout_promotions_total", ())] < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
            promoted, names = scrape(port)
        assert names >= QUALITY_FAMILIES | {"p2pfl_quality_base_seq"}, sorted(QUALITY_FAMILIES - names)
        assert first[("p2pfl_rollout_promotions_total", ())] == 0
        assert promoted[("p2pfl_rollout_promotions_total", ())] >= 1
        assert (
            promoted[("p2pfl_rollout_serving_seq", ())] >= 2 and promoted[("p2pfl_rollout_enabled", ())] == 1
        )

        after = trio.run(send_forged, cluster.specs[0].addr, port, 30.0)
        assert after[("p2pfl_metrics_errors_total", ())] == 0
        assert cluster.stop(0, signal.SIGTERM) == 0
    finally:
        cluster.stop_all()
    with socket.socket() as s:  # the endpoint closed with the peer
        assert s.connect_ex(("127.0.0.1", port)) != 0
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    me = cluster.specs[0].identity.peer_id
    assert records and all(r["peer_id"] == me for r in records)
    events = {r.get("event") for r in records}
    assert {"start", "round", "rejection", "stop", "promotion"} <= events
    for r in records:
        if r.get("event") in EVENTS:
            assert set(EVENTS[r["event"]]) <= set(r), r


def test_a_metrics_port_in_use_is_one_line_and_exit_3(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 1, seed_base=50)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cluster.configure(0, sections(cluster, 0, port))
        proc = subprocess.run(
            [sys.executable, "-m", "p2pfl.cli", "peer", "--config", str(cluster.specs[0].config)],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 3, proc.stderr
    assert len(errors) == 1 and f"[metrics] listen 127.0.0.1:{port}" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
