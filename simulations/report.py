"""Turn a run's per-peer results into ``results.json``, ``report.md`` and PNG plots (matplotlib, Agg).

Definitions (all measured by the simulation itself):

* ``final_accuracy``: the peer's final own model on the global held-out test split.
* ``honest_accuracy``: mean, min and 10th percentile of ``final_accuracy`` over honest peers.
* ``evictions``: over pairs (honest peer h, its topology neighbour a): ``true_positive`` = pairs where a is a
  model-poisoning attacker and h evicted it, ``expected`` = all such pairs, ``false_positive`` = pairs where a
  is honest and h evicted it; ``rounds_to_evict`` = h's local round at which it evicted a (min/mean/max).
  Replay, forge and crash attackers publish honest models: they are not expected to be evicted.
* ``bytes_per_peer_per_round``: bytes sent per honest peer per completed round (gossip + request bodies).
* ``series``: per peer-local round r, over honest peers: mean/min test accuracy, consensus distance (mean
  distance of honest models to their mean), mean time and bytes, and the mean reputation honest peers give
  to attacker neighbours vs honest neighbours.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

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
        "series": _series(output, honest, attackers),
    }
    return results


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
        for k in ("round", "acc_mean", "acc_min", "t", "bytes", "consensus", "rep_attacker", "rep_honest")
    }
    for r in range(rounds):
        rows = [p["trace"][r] for p in honest if len(p.get("trace", [])) > r]
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


def _plot(
    path: Path, title: str, xlabel: str, ylabel: str, lines: list[tuple[list[Any], list[Any], str]]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for xs, ys, label in lines:
        pts = [(x, y) for x, y in zip(xs, ys, strict=False) if x is not None and y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, marker=".")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if any(lbl for _, _, lbl in lines):
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_plots(results: dict[str, Any], out: Path) -> list[str]:
    s = results["series"]
    r = s["round"]
    _plot(
        out / "accuracy.png",
        "Honest peers: test accuracy",
        "peer-local round",
        "accuracy",
        [(r, s["acc_mean"], "mean"), (r, s["acc_min"], "min")],
    )
    _plot(
        out / "consensus.png",
        "Consensus distance between honest models",
        "peer-local round",
        "mean |x_i - mean|",
        [(r, s["consensus"], "")],
    )
    _plot(
        out / "bytes.png",
        "Bytes per honest peer (sent + received)",
        "seconds since start",
        "bytes",
        [(s["t"], s["bytes"], "")],
    )
    _plot(
        out / "reputation.png",
        "Reputation given by honest peers",
        "peer-local round",
        "reputation",
        [(r, s["rep_attacker"], "attacker neighbours"), (r, s["rep_honest"], "honest neighbours")],
    )
    return ["accuracy.png", "consensus.png", "bytes.png", "reputation.png"]


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
        f"| rounds to evict min / mean / max | {_fmt(rte['min'])} / {_fmt(rte['mean'])} / "
        f"{_fmt(rte['max'])} |",
        f"| bytes sent per peer per round | {_fmt(results['bytes_per_peer_per_round'])} |",
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
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def write_outputs(output: Any, out: Path, *, plots: bool = True) -> dict[str, Any]:
    results = summarise(output)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    names = write_plots(results, out) if plots else []
    (out / "report.md").write_text(markdown(results, names))
    return results
