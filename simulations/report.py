"""Turn a run's per-peer results into ``results.json``, ``report.md`` and PNG plots (matplotlib, Agg).

Definitions (all measured by the simulation itself):

* ``final_accuracy``: the peer's final own model on the global held-out test split.
* ``honest_accuracy``: mean, min and 10th percentile of ``final_accuracy`` over honest peers.
* ``evictions``: over pairs (honest peer h, its topology neighbour a): ``true_positive`` = pairs where a is a
  model-poisoning attacker and h evicted it, ``expected`` = all such pairs, ``false_positive`` = pairs where a
  is honest and h evicted it; ``rounds_to_evict`` = h's local round at which it evicted a (min/mean/max).
  Replay, forge and crash attackers publish honest models: they are not expected to be evicted.
* ``bytes_per_peer_per_round``: bytes sent per honest peer per completed round (gossip + request bodies).
* ``round_time_s``: over honest peers and rounds after their first, the time between two consecutive
  rounds' completions (wall clock; includes the wait for neighbours): mean, p50, p95, max.
* ``egress_bytes_per_peer``: bytes each honest peer sent (its whole run: gossip, request bodies, control):
  mean, p95, max; each peer's own figure is its ``bytes_sent``.
* ``quality``: the honest peers' last ΔAUC/ΔF1 (their newest version against the version they serve, or
  their previous version with the rollout off; see docs/rollout.md), mean; and rollout promotions.
* ``series``: per peer-local round r, over honest peers: mean/min test accuracy, consensus distance (mean
  distance of honest models to their mean), mean time and bytes, the mean reputation honest peers give
  to attacker neighbours vs honest neighbours, mean/p95 round time, mean ΔAUC and ΔF1, and the number of
  evictions and rollout promotions honest peers made in that round.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .privacy_report import privacy_lines, privacy_summary
from .scenario import MODEL_ATTACKS


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "min": None, "p10": None, "max": None}
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": round(float(a.mean()), 4),
        "min": round(float(a.min()), 4),
        "p10": round(float(np.percentile(a, 10)), 4),
        "max": round(float(a.max()), 4),
    }


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return round(float(np.mean(vals)), 4) if vals else None


def summarise(output: Any) -> dict[str, Any]:
    """The machine-readable results of a :class:`simulations.runner.RunOutput`."""
    plan = output.plan
    scenario = plan.scenario
    peers: list[dict[str, Any]] = output.peers
    by_id = {p["id"]: p for p in peers}
    honest = [p for p in peers if p["honest"]]
    attackers = {p["id"] for p in peers if not p["honest"]}
    poisoners = {p["id"] for p in peers if not p["honest"] and p["kind"] in MODEL_ATTACKS}

    evicted_by: dict[str, list[str]] = {p["id"]: [] for p in peers}
    for p in peers:
        for q in p.get("evicted", []):
            if q in evicted_by:
                evicted_by[q].append(p["id"])

    tp = fp = expected = 0
    rounds_to_evict: list[int] = []
    all_neighbours_evicted = 0
    for a in poisoners:
        honest_nbrs = [by_id[plan.peer_ids[j]] for j in by_id[a]["neighbours"] if plan.peers[j].honest]
        expected += len(honest_nbrs)
        hits = 0
        for h in honest_nbrs:
            if a in h.get("evicted", []):
                tp += 1
                hits += 1
                for row in h.get("trace", []):
                    if a in row.get("evicted", []):
                        rounds_to_evict.append(int(row["round"]))
                        break
        if honest_nbrs and hits == len(honest_nbrs):
            all_neighbours_evicted += 1
    for h in honest:
        fp += sum(1 for q in h.get("evicted", []) if q not in attackers)

    accs = [p["final_accuracy"] for p in honest if p.get("final_accuracy") is not None]
    per_round = [p["bytes_sent"] / p["rounds"] for p in honest if p.get("rounds") and "bytes_sent" in p]

    results: dict[str, Any] = {
        "scenario": scenario.to_dict(),
        "name": scenario.name,
        "wall_s": round(output.wall_s, 2),
        "timed_out": output.timed_out,
        "peers": [
            {
                "id": p["id"],
                "index": p["index"],
                "honest": p["honest"],
                "kind": p["kind"],
                "final_accuracy": None if p.get("final_accuracy") is None else round(p["final_accuracy"], 4),
                "rounds": p.get("rounds", 0),
                "bytes_sent": p.get("bytes_sent", 0),
                "bytes_received": p.get("bytes_received", 0),
                "rejected": p.get("rejected", {}),
                "evicted": p.get("evicted", []),
                "evicted_by": sorted(evicted_by[p["id"]]),
                "restarts": p.get("restarts", 0),
                "bad_envelopes_sent": p.get("bad_envelopes_sent", 0),
                **({"error": p["error"]} if "error" in p else {}),
                **({"stalled": True} if p.get("stalled") else {}),
                **({"rotation": p["rotation"]} if p.get("rotation") else {}),  # [run] rotate_every
            }
            for p in peers
        ],
        "honest_accuracy": _stats(accs),
        "attackers": len(attackers),
        "evictions": {
            "true_positive": tp,
            "expected": expected,
            "false_positive": fp,
            "attackers_evicted_by_every_honest_neighbour": all_neighbours_evicted,
            "poisoning_attackers": len(poisoners),
            "rounds_to_evict": {
                "min": min(rounds_to_evict) if rounds_to_evict else None,
                "mean": _mean([float(r) for r in rounds_to_evict]),
                "max": max(rounds_to_evict) if rounds_to_evict else None,
            },
        },
        "rejected_total": _sum_counts([p.get("rejected", {}) for p in honest]),
        "bytes_per_peer_per_round": round(float(np.mean(per_round)), 1) if per_round else None,
        "round_time_s": _spread(_round_times(honest)),
        "egress_bytes_per_peer": _spread([float(p.get("bytes_sent", 0)) for p in honest], digits=0),
        "quality": _quality(honest),
        "series": _series(output, honest, attackers),
        "privacy": privacy_summary(scenario.to_dict(), honest),  # epsilon over rounds; None with DP off
    }
    return results


def _round_times(honest: list[dict[str, Any]]) -> list[float]:
    """Seconds between consecutive round completions of each honest peer (its first round left out: it
    includes the start-up)."""
    out: list[float] = []
    for p in honest:
        ts = [row["t"] for row in p.get("trace", []) if row.get("t") is not None]
        out += [b - a for a, b in itertools.pairwise(ts)]
    return out


def _spread(values: list[float], digits: int = 3) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p95": None, "max": None}
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": round(float(a.mean()), digits),
        "p50": round(float(np.percentile(a, 50)), digits),
        "p95": round(float(np.percentile(a, 95)), digits),
        "max": round(float(a.max()), digits),
    }


def _quality(honest: list[dict[str, Any]]) -> dict[str, Any]:
    last = [p["trace"][-1] for p in honest if p.get("trace")]
    return {
        "delta_auc_mean": _mean([r["d_auc"] for r in last if r.get("d_auc") is not None]),
        "delta_f1_mean": _mean([r["d_f1"] for r in last if r.get("d_f1") is not None]),
        "promotions": sum(int(r.get("promotions") or 0) for r in last),
    }


def _sum_counts(counts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + int(v)
    return dict(sorted(total.items()))


def _series(output: Any, honest: list[dict[str, Any]], attackers: set[str]) -> dict[str, list[Any]]:
    rounds = max((len(p.get("trace", [])) for p in honest), default=0)
    s: dict[str, list[Any]] = {
        k: []
        for k in (
            "round",
            "acc_mean",
            "acc_min",
            "t",
            "bytes",
            "consensus",
            "rep_attacker",
            "rep_honest",
            "round_time_mean",
            "round_time_p95",
            "delta_auc",
            "delta_f1",
            "evictions",
            "promotions",
        )
    }
    for r in range(rounds):
        rows = [p["trace"][r] for p in honest if len(p.get("trace", [])) > r]
        _series_extra(s, r, [p["trace"] for p in honest if len(p.get("trace", [])) > r])
        s["round"].append(r + 1)
        accs = [row["acc"] for row in rows if row.get("acc") is not None]
        s["acc_mean"].append(_mean(accs))
        s["acc_min"].append(round(min(accs), 4) if accs else None)
        s["t"].append(_mean([row["t"] for row in rows]))
        s["bytes"].append(_mean([float(row["bytes_sent"] + row["bytes_received"]) for row in rows]))
        rep_a = [v for row in rows for q, v in row.get("rep", {}).items() if q in attackers]
        rep_h = [v for row in rows for q, v in row.get("rep", {}).items() if q not in attackers]
        s["rep_attacker"].append(_mean(rep_a))
        s["rep_honest"].append(_mean(rep_h))
        vecs = [v[r] for v in output.vectors.values() if len(v) > r]
        if len(vecs) >= 2:
            stack = np.stack(vecs).astype(np.float64)
            s["consensus"].append(round(float(np.linalg.norm(stack - stack.mean(axis=0), axis=1).mean()), 5))
        else:
            s["consensus"].append(None)
    return s


def _series_extra(s: dict[str, list[Any]], r: int, traces: list[list[dict[str, Any]]]) -> None:
    """Round ``r``'s round time, ΔAUC/ΔF1 and event counts over the honest peers' ``traces``."""
    rows = [t[r] for t in traces]
    times = [t[r]["t"] - t[r - 1]["t"] for t in traces if r > 0 and t[r].get("t") is not None]
    s["round_time_mean"].append(_mean(times))
    s["round_time_p95"].append(round(float(np.percentile(times, 95)), 4) if times else None)
    s["delta_auc"].append(_mean([row["d_auc"] for row in rows if row.get("d_auc") is not None]))
    s["delta_f1"].append(_mean([row["d_f1"] for row in rows if row.get("d_f1") is not None]))
    s["evictions"].append(sum(len(row.get("evicted", [])) for row in rows))
    promoted = 0
    for t in traces:  # a promotion: the peer's counter grew since its previous round (a restart resets it)
        now, before = t[r].get("promotions") or 0, (t[r - 1].get("promotions") or 0) if r > 0 else 0
        promoted += max(0, now - before)
    s["promotions"].append(promoted)


def _plot(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    lines: list[tuple[list[Any], list[Any], str]],
    *,
    marks: list[tuple[list[Any], str, str]] | None = None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for xs, ys, label in lines:
        pts = [(x, y) for x, y in zip(xs, ys, strict=False) if x is not None and y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, marker=".")
    marks = marks or []
    for xs, label, style in marks:  # events: a vertical line per round where one happened
        for i, x in enumerate(xs):
            ax.axvline(x, color=style, linestyle="--", alpha=0.6, label=label if i == 0 else None)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if any(lbl for _, _, lbl in lines) or any(xs for xs, _, _ in marks):
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_plots(results: dict[str, Any], out: Path) -> list[str]:
    s = results["series"]
    r = s["round"]
    evictions = [x for x, n in zip(r, s.get("evictions", []), strict=False) if n]
    promotions = [x for x, n in zip(r, s.get("promotions", []), strict=False) if n]
    _plot(
        out / "accuracy.png",
        "Honest peers: test accuracy",
        "peer-local round",
        "accuracy",
        [(r, s["acc_mean"], "mean"), (r, s["acc_min"], "min")],
        marks=[(evictions, "an eviction", "tab:red"), (promotions, "a rollout promotion", "tab:green")],
    )
    _plot(
        out / "consensus.png",
        "How far apart the honest peers' models are (lower: they agree)",
        "peer-local round",
        "mean distance of a model from their average",
        [(r, s["consensus"], "")],
    )
    mib = [None if b is None else b / 2**20 for b in s["bytes"]]
    _plot(
        out / "bytes.png",
        "Traffic per honest peer so far (sent + received)",
        "wall-clock time since the start (s)",
        "cumulative traffic (MiB)",
        [(s["t"], mib, "")],
    )
    _plot(
        out / "round_time.png",
        "Time between two rounds of an honest peer",
        "peer-local round",
        "round time (s)",
        [(r, s.get("round_time_mean", []), "mean"), (r, s.get("round_time_p95", []), "p95")],
    )
    _plot(
        out / "quality_deltas.png",
        "Newest version against the base version (honest mean)",
        "peer-local round",
        "delta (positive: better)",
        [(r, s.get("delta_auc", []), "ΔAUC (macro one-vs-rest)"), (r, s.get("delta_f1", []), "ΔF1 (macro)")],
        marks=[(promotions, "a rollout promotion", "tab:green")],
    )
    _plot_egress(out / "egress.png", results["peers"])
    privacy = results.get("privacy")
    if privacy is not None:
        _plot(
            out / "privacy.png",
            "Differential privacy: epsilon spent by honest peers",
            "peer-local round",
            "epsilon",
            [(r, privacy["series"]["eps_max"], "max"), (r, privacy["series"]["eps_mean"], "mean")],
        )
    _plot(
        out / "reputation.png",
        "Reputation given by honest peers",
        "peer-local round",
        "reputation",
        [(r, s["rep_attacker"], "attacker neighbours"), (r, s["rep_honest"], "honest neighbours")],
    )
    return [
        "accuracy.png",
        "consensus.png",
        "bytes.png",
        "reputation.png",
        "round_time.png",
        "quality_deltas.png",
        "egress.png",
        *(["privacy.png"] if privacy is not None else []),
    ]


def _plot_egress(path: Path, peers: list[dict[str, Any]]) -> None:
    """Bytes each peer sent over the whole run (egress), honest and attacker peers in two colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    idx = [p["index"] for p in peers]
    mib = [p.get("bytes_sent", 0) / 2**20 for p in peers]
    colours = ["tab:blue" if p["honest"] else "tab:red" for p in peers]
    ax.bar(idx, mib, color=colours)
    ax.set_title("Egress per peer over the run (blue: honest, red: attacker)")
    ax.set_xlabel("peer index")
    ax.set_ylabel("bytes sent (MiB)")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _stalled(results: dict[str, Any]) -> str:
    """The honest peers counted finished short of their rounds (simulations/peer_runner.py, ``_stalled``)."""
    stalled = [p for p in results["peers"] if p.get("stalled")]
    return ", ".join(f"{p['index']} (round {p['rounds']})" for p in stalled) or "0"


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None:
        return "-"
    if pct:
        return f"{100 * x:.1f}%"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def markdown(results: dict[str, Any], plots: list[str]) -> str:
    sc = results["scenario"]
    acc = results["honest_accuracy"]
    ev = results["evictions"]
    rte = ev["rounds_to_evict"]
    rejected = ", ".join(f"{k}: {v}" for k, v in results["rejected_total"].items())
    rt, eg, qu = (results.get(k) or {} for k in ("round_time_s", "egress_bytes_per_peer", "quality"))
    lines = [
        f"# Simulation report: {results['name']}",
        "",
        f"{sc['topology']['peers']} peers ({results['attackers']} attackers: {sc['attack']['kind']}), "
        f"transport `{sc['run']['transport']}`, topology `{sc['topology']['kind']}`, "
        f"data `{sc['data']['dataset']}` "
        f"({sc['data']['partition']}), model `{sc['model']['kind']}`, rule `{sc['aggregation']['rule']}`, "
        f"{sc['run']['rounds']} rounds per honest peer.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| wall time | {results['wall_s']:.1f} s{' (TIMED OUT)' if results['timed_out'] else ''} |",
        f"| honest accuracy mean / min / p10 | {_fmt(acc['mean'], True)} / {_fmt(acc['min'], True)} / "
        f"{_fmt(acc['p10'], True)} |",
        f"| evictions of poisoners (true positive / expected) | {ev['true_positive']} / {ev['expected']} |",
        "| poisoners evicted by every honest neighbour | "
        f"{ev['attackers_evicted_by_every_honest_neighbour']} / "
        f"{ev['poisoning_attackers']} |",
        f"| honest peers evicted (false positive) | {ev['false_positive']} |",
        f"| honest peers stalled (paused, nobody connected) | {_stalled(results)} |",
        f"| rounds to evict min / mean / max | {_fmt(rte['min'])} / {_fmt(rte['mean'])} / "
        f"{_fmt(rte['max'])} |",
        f"| bytes sent per peer per round | {_fmt(results['bytes_per_peer_per_round'])} |",
        f"| round time mean / p95 / max (s) | {_fmt(rt.get('mean'))} / {_fmt(rt.get('p95'))} / "
        f"{_fmt(rt.get('max'))} |",
        f"| egress per honest peer mean / p95 / max (bytes) | {_fmt(eg.get('mean'))} / "
        f"{_fmt(eg.get('p95'))} / {_fmt(eg.get('max'))} |",
        f"| last ΔAUC / ΔF1 (honest mean) | {_fmt(qu.get('delta_auc_mean'))} / "
        f"{_fmt(qu.get('delta_f1_mean'))} |",
        f"| rollout promotions | {_fmt(qu.get('promotions'))} |",
        f"| rejected at honest peers | {rejected or '-'} |",
        "",
        "## Peers",
        "",
        "| # | kind | accuracy | rounds | sent | received | evicted by |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in results["peers"][:64]:
        lines.append(
            f"| {p['index']} | {p['kind']} | {_fmt(p['final_accuracy'], True)} | {p['rounds']} "
            f"| {p['bytes_sent']} "
            f"| {p['bytes_received']} | {len(p['evicted_by'])} |"
        )
    if len(results["peers"]) > 64:
        lines.append(f"| ... | {len(results['peers']) - 64} more in results.json | | | | | |")
    lines += ["", *privacy_lines(results.get("privacy"))]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def write_outputs(output: Any, out: Path, *, plots: bool = True) -> dict[str, Any]:
    results = summarise(output)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    names = write_plots(results, out) if plots else []
    (out / "report.md").write_text(markdown(results, names))
    return results
