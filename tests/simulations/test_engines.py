"""Small scenarios end to end: the memory engine in-process, the libp2p engine with real peer processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from p2pfl.cli import main as cli_main
from p2pfl.sim.runner import run_scenario
from p2pfl.sim.scenario import SimulationError, parse_scenario

SMALL: dict[str, dict[str, Any]] = {
    "run": {"seed": 3, "rounds": 12, "transport": "memory", "time_limit_s": 120},
    "data": {"dataset": "digits", "partition": "iid"},
    "model": {"kind": "mlp", "hidden": 32, "local_steps": 10},
    "topology": {"peers": 5, "kind": "complete"},
}


def scenario(**sections: dict[str, Any]) -> Any:
    data = {k: dict(v) for k, v in SMALL.items()}
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v}
    return parse_scenario(data, name="small")


def test_memory_engine_signflip_report(tmp_path: Path) -> None:
    r = run_scenario(scenario(attack={"kind": "signflip", "fraction": 0.2}), tmp_path, quiet=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["honest_accuracy"] == r["honest_accuracy"]
    for key in ("scenario", "wall_s", "peers", "honest_accuracy", "evictions", "bytes_per_peer_per_round"):
        assert key in saved
    assert saved["scenario"]["attack"]["kind"] == "signflip"
    peers = saved["peers"]
    assert len(peers) == 5 and sum(not p["honest"] for p in peers) == 1
    for p in peers:
        assert {
            "id",
            "honest",
            "final_accuracy",
            "rounds",
            "bytes_sent",
            "bytes_received",
            "rejected",
        } <= set(p)
        assert "evicted_by" in p
    honest = [p for p in peers if p["honest"]]
    assert all(p["rounds"] == 12 and p["bytes_sent"] > 0 and "stalled" not in p for p in honest)
    assert r["honest_accuracy"]["mean"] >= 0.85, r["honest_accuracy"]
    ev = r["evictions"]
    assert ev["true_positive"] == ev["expected"] == 4 and ev["false_positive"] == 0, ev
    bad = next(p for p in peers if not p["honest"])
    assert len(bad["evicted_by"]) >= 4
    for name in ("report.md", "accuracy.png", "consensus.png", "bytes.png", "reputation.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "honest accuracy" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(("kind", "reason"), [("replay", "replay"), ("forge", "transport:gossip_invalid")])
def test_bad_envelopes_are_rejected_and_counted(tmp_path: Path, kind: str, reason: str) -> None:
    sc = scenario(run={"rounds": 6}, attack={"kind": kind, "fraction": 0.2, "interval_s": 0.05})
    r = run_scenario(sc, tmp_path, quiet=True, plots=False)
    bad = next(p for p in r["peers"] if not p["honest"])
    assert bad["bad_envelopes_sent"] > 0
    honest = [p for p in r["peers"] if p["honest"]]
    assert sum(p["rejected"].get(reason, 0) for p in honest) > 0, [p["rejected"] for p in honest]
    assert r["honest_accuracy"]["mean"] >= 0.8


def test_crash_attacker_and_churn(tmp_path: Path) -> None:
    sc = scenario(
        run={"rounds": 8},
        attack={"kind": "crash", "fraction": 0.2, "crash_round": 2},
        churn={"crashes": [{"peer": 0, "round": 3, "downtime_s": 0.3}]},
    )
    r = run_scenario(sc, tmp_path, quiet=True, plots=False)
    crashed = next(p for p in r["peers"] if not p["honest"])
    assert crashed["rounds"] == 2
    honest = [p for p in r["peers"] if p["honest"]]
    assert all(p["rounds"] == 8 for p in honest)
    p0 = next(p for p in r["peers"] if p["index"] == 0)
    if p0["honest"]:
        assert p0["restarts"] == 1
    # a restarted peer resumed its version numbers: no neighbour saw a replay or a broken chain from it
    assert all(p["rejected"].get("result_mismatch", 0) == 0 for p in honest)


def test_an_honest_peer_left_with_nobody_is_reported_stalled_and_does_not_hold_the_run(
    tmp_path: Path,
) -> None:
    """A 4-ring whose two crash attackers (seed 4 places them at 1 and 3) leave each honest peer with no
    neighbour: it trains its solo rounds, pauses, and can never finish its 20 rounds. The run ends, with the
    peers marked stalled in the results and the report (it ran to ``time_limit_s`` and timed out before)."""
    sc = scenario(
        run={"seed": 4, "rounds": 20, "time_limit_s": 300},
        topology={"peers": 4, "kind": "ring"},
        attack={"kind": "crash", "fraction": 0.5, "crash_round": 3},
    )
    r = run_scenario(sc, tmp_path, quiet=True, plots=False, reproducible=True)
    assert not r["timed_out"]
    honest = [p for p in r["peers"] if p["honest"]]
    assert [p["index"] for p in honest] == [0, 2]
    assert all(p.get("stalled") and 3 < p["rounds"] < 20 for p in honest), honest
    assert not any(p.get("stalled") for p in r["peers"] if not p["honest"])
    report = (tmp_path / "report.md").read_text()
    assert "| honest peers stalled (paused, nobody connected) | 0 (round" in report


def test_cli_sim_runs_a_scenario_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[run]\ntransport = "memory"\nrounds = 3\n[topology]\npeers = 3\n[model]\nkind = "logreg"\n')
    assert 0 == cli_main(["sim", str(f), "--out", str(tmp_path / "out"), "--quiet"])
    assert "honest accuracy" in capsys.readouterr().out
    assert (tmp_path / "out" / "results.json").exists()
    f.write_text("[run]\nrounds = 0\n")
    assert 1 == cli_main(["sim", str(f), "--out", str(tmp_path / "out2"), "--quiet"])
    assert "[run] rounds" in capsys.readouterr().err


@pytest.mark.slow
def test_libp2p_engine_real_processes_agree_with_memory_engine(tmp_path: Path) -> None:
    """Same small scenario on both engines: both learn, evict the attacker, and agree statistically."""
    sc = scenario(
        run={"rounds": 15, "transport": "libp2p"},
        topology={"peers": 4},
        attack={"kind": "signflip", "fraction": 0.25},
    )
    real = run_scenario(sc, tmp_path / "libp2p", quiet=True, plots=False)
    # the memory side on a simulated clock: a seeded, reproducible reference for the real processes
    mem_sc = sc.replace(run={"transport": "memory"})
    mem = run_scenario(mem_sc, tmp_path / "memory", quiet=True, plots=False, reproducible=True)
    assert not real["timed_out"]
    for p in real["peers"]:  # every peer ran as its own process and left a checkpoint and a result
        d = tmp_path / "libp2p" / "peers" / str(p["index"])
        assert (d / "checkpoint.p2ck").exists() or list(d.glob("checkpoint*")), list(d.iterdir())
        assert (d / "result.json").exists()
    r_acc, m_acc = real["honest_accuracy"], mem["honest_accuracy"]
    assert r_acc["mean"] >= 0.85 and m_acc["mean"] >= 0.85, (r_acc, m_acc)
    assert abs(r_acc["mean"] - m_acc["mean"]) <= 0.06, (r_acc, m_acc)
    ev = mem["evictions"]  # reproducible: every honest neighbour evicts the sign-flipper
    why = _why("memory", mem, tmp_path)
    assert ev["true_positive"] == ev["expected"] == 3 and ev["false_positive"] == 0, why
    # Real processes: a peer scores each version of a neighbour once, and its rounds (~40 ms) do not wait
    # for a CPU-starved neighbour, so a peer can finish its 15 rounds having scored fewer than
    # ``evict_after`` of the attacker's versions (seen in CI: evicted after its last round). What every
    # honest peer must show is the bar: the attacker evicted, or never given more than a 0.1 share
    # of any mix; and evictions happen over libp2p, with no honest peer evicted.
    ev, why = real["evictions"], _why("libp2p", real, tmp_path)
    assert ev["expected"] == 3 and ev["true_positive"] >= 1 and ev["false_positive"] == 0, why
    bad = next(p["id"] for p in real["peers"] if not p["honest"])
    for p in real["peers"]:
        if p["honest"] and bad not in p["evicted"]:
            assert _max_share(tmp_path / "libp2p", p["index"], bad) <= 0.1, why
    # the same protocol: same message sizes per round within a factor (libp2p adds no bytes to the counts)
    assert 0.5 <= real["bytes_per_peer_per_round"] / mem["bytes_per_peer_per_round"] <= 2.0


def _max_share(out: Path, index: int, peer: str) -> float:
    """The largest share of a mix ``peer`` got at peer ``index`` (its trace rows, simulations.observe)."""
    trace = json.loads((out / "peers" / str(index) / "result.json").read_text())["trace"]
    return max((row.get("mix", {}).get(peer, 0.0) for row in trace), default=0.0)


def _why(engine: str, result: dict[str, Any], out: Path) -> str:
    """What a failed eviction check needs to be diagnosed from a CI log alone: each peer's rounds, whom it
    evicted, its rejections, and the tail of each libp2p worker's log."""
    lines = [f"{engine}: {result['evictions']}"]
    for p in result["peers"]:
        keys = ("index", "honest", "rounds", "evicted", "evicted_by", "rejected", "restarts")
        lines.append(repr({k: p.get(k) for k in keys}))
        d = out / engine / "peers" / str(p["index"])
        if engine == "libp2p" and (d / "result.json").exists():
            for row in json.loads((d / "result.json").read_text()).get("trace", []):
                mix, evicted = row.get("mix"), row["evicted"]
                lines.append(f"  round {row['round']} t={row['t']} mix={mix} evicted={evicted}")
        if engine == "libp2p" and (d / "worker.log").exists():
            lines.append((d / "worker.log").read_text(errors="replace")[-1500:])
    return "\n".join(lines)


def test_a_worker_that_cannot_listen_fails_the_run_at_the_start_gate(
    tmp_path: Path, port_1_taken: object
) -> None:
    """A worker whose port was taken between the plan and its bind exits (and its ``finally`` still writes
    a result.json): the run must fail at once with that worker's log, not wait at the gate for the time
    limit."""
    sc = scenario(run={"rounds": 2, "transport": "libp2p", "time_limit_s": 600}, topology={"peers": 3})
    # the worker's peer leaves ``crashed`` and then its process exits: either is seen first
    with pytest.raises(SimulationError, match=r"peer (worker 1 exited|1 crashed)") as err:
        run_scenario(sc, tmp_path, quiet=True, plots=False)
    assert "within the time limit" not in str(err.value)
