"""simulations/report.py: round time p95, egress per peer, ΔAUC/ΔF1 series, eviction and promotion marks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from p2pfl.sim.report import _series_extra, write_plots
from p2pfl.sim.runner import run_scenario
from p2pfl.sim.scenario import parse_scenario

SMALL: dict[str, dict[str, Any]] = {
    "run": {"seed": 3, "rounds": 8, "transport": "memory", "time_limit_s": 120},
    "data": {"dataset": "digits", "partition": "iid"},
    "model": {"kind": "mlp", "hidden": 32, "local_steps": 10},
    "topology": {"peers": 5, "kind": "complete"},
    "attack": {"kind": "signflip", "fraction": 0.2},
}


def test_results_carry_round_time_egress_and_quality_series_and_the_report_plots_them(tmp_path: Path) -> None:
    # on the simulated clock (one result per seed): in real time the memory engine's worker threads set the
    # peers' order, and in about 1 run in 10 a peer's first four scores of the sign-flipper straddle a
    # founding-round version that scored clean, which moves its eviction past round 8
    run_scenario(parse_scenario(SMALL, name="small"), tmp_path, quiet=True, reproducible=True)
    r = json.loads((tmp_path / "results.json").read_text())
    rt, eg = r["round_time_s"], r["egress_bytes_per_peer"]
    assert 0 < rt["p50"] <= rt["p95"] <= rt["max"]
    honest_sent = [p["bytes_sent"] for p in r["peers"] if p["honest"]]
    assert eg["max"] == max(honest_sent) and eg["mean"] > 0
    s = r["series"]
    assert len(s["delta_auc"]) == len(s["round"]) == 8
    assert sum(v is not None for v in s["delta_auc"]) >= 6 and sum(v is not None for v in s["delta_f1"]) >= 6
    assert sum(s["evictions"]) >= 4  # every honest peer evicts the sign-flipper
    assert s["round_time_p95"][0] is None and s["round_time_p95"][-1] is not None
    assert r["quality"]["promotions"] == 0  # the rollout is off in scenarios
    md = (tmp_path / "report.md").read_text()
    assert "round time mean / p95 / max" in md and "egress per honest peer" in md
    for name in ("round_time.png", "quality_deltas.png", "egress.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_promotions_are_counted_per_round_and_a_restart_is_no_promotion(tmp_path: Path) -> None:
    traces = [
        [{"t": 1.0, "promotions": 0}, {"t": 2.0, "promotions": 1}, {"t": 3.0, "promotions": 0}],
        [{"t": 1.0, "promotions": 0}, {"t": 2.5, "promotions": 0}, {"t": 3.5, "promotions": 2}],
    ]
    keys = ("round_time_mean", "round_time_p95", "delta_auc", "delta_f1", "evictions", "promotions")
    s: dict[str, list[Any]] = {k: [] for k in keys}
    for r in range(3):
        _series_extra(s, r, traces)
    assert s["promotions"] == [0, 1, 2]
    assert s["round_time_mean"] == [None, 1.25, 1.0]
    results = {
        "series": {
            "round": [1, 2, 3],
            "acc_mean": [0.5, 0.6, 0.7],
            "acc_min": [0.4, 0.5, 0.6],
            "t": [1.0, 2.0, 3.0],
            "bytes": [1e6, 2e6, 3e6],
            "consensus": [1.0, 0.5, 0.2],
            "rep_attacker": [None] * 3,
            "rep_honest": [1.0] * 3,
            **s,
            "evictions": [0, 2, 0],
        },
        "peers": [{"index": 0, "honest": True, "bytes_sent": 2**20}],
    }
    names = write_plots(results, tmp_path)
    assert {"accuracy.png", "quality_deltas.png", "egress.png", "round_time.png"} <= set(names)
    assert all((tmp_path / n).stat().st_size > 0 for n in names)


def test_a_scenario_with_rollout_on_marks_promotions_on_the_accuracy_plot(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A ``[rollout]`` section turns the rollout on in every simulated peer: versions are promoted (the model
    improves quickly on digits), results.json carries the series and the accuracy plot marks the rounds."""
    from p2pfl.sim import report

    calls: dict[str, dict[str, Any]] = {}
    plot = report._plot

    def recording(path: Path, *args: Any, **kwargs: Any) -> None:
        calls[path.name] = {"args": args, **kwargs}
        plot(path, *args, **kwargs)

    monkeypatch.setattr(report, "_plot", recording)
    tiny = {
        "run": {"seed": 4, "rounds": 5, "transport": "memory", "time_limit_s": 120},
        "data": {"dataset": "digits", "partition": "iid"},
        "model": {"kind": "mlp", "hidden": 16, "local_steps": 10},
        "topology": {"peers": 3, "kind": "complete"},
        "rollout": {"enabled": True, "shadow_rounds": 0, "promote_after": 1},
    }
    scenario = parse_scenario(tiny, name="tiny")
    assert scenario.peer_overrides()["rollout"].enabled
    run_scenario(scenario, tmp_path, quiet=True)
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["scenario"]["rollout"]["enabled"] is True
    s = r["series"]
    assert len(s["delta_auc"]) == len(s["delta_f1"]) == len(s["promotions"]) == 5
    assert sum(v is not None for v in s["delta_auc"]) >= 3 and sum(v is not None for v in s["delta_f1"]) >= 3
    assert s["promotions"][0] == 0  # serving the first version is no promotion
    assert sum(s["promotions"]) >= 1 and r["quality"]["promotions"] == sum(s["promotions"])
    assert r["round_time_s"]["p95"] is not None and r["round_time_s"]["p95"] > 0
    assert r["egress_bytes_per_peer"]["mean"] > 0 and all(p["bytes_sent"] > 0 for p in r["peers"])
    promoted_rounds = [x for x, n in zip(s["round"], s["promotions"], strict=True) if n]
    marks = {label: xs for xs, label, _ in calls["accuracy.png"]["marks"]}
    assert marks["a rollout promotion"] == promoted_rounds
    # the plots say what they show, in words and units (title, x label, y label)
    title, xlabel, ylabel = calls["consensus.png"]["args"][:3]
    assert "lower: they agree" in title and "distance" in ylabel and xlabel == "peer-local round"
    title, xlabel, ylabel = calls["bytes.png"]["args"][:3]
    assert "sent + received" in title and xlabel.endswith("(s)") and ylabel.endswith("(MiB)")
    md = (tmp_path / "report.md").read_text()
    assert f"| rollout promotions | {r['quality']['promotions']} |" in md and "![accuracy.png]" in md
