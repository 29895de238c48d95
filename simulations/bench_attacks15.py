"""Issue 15's targets vs what the simulation measures: runs each attack scenario (and its no-attack twin).

``python -m p2pfl.sim.bench_attacks15 [--only sybil_open,slow,...] [--transport memory|libp2p]
[--work DIR] [--json FILE] [--with-default]``

Each case runs ``simulations/scenarios/<name>.toml`` (and, where the target is relative, its twin: the same
scenario without Sybils, or with ``[attack] kind = "none"``) and prints one row per target: the target, the
measured value, and whether it is met. The figures come from ``results.json["attacks"]``
(:mod:`simulations.attack_metrics`). ``--with-default`` adds the default scenario's row (libp2p, ~1 min).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .runner import run_scenario
from .scenario import Scenario, load_scenario

SCENARIOS = Path(__file__).parent / "scenarios"
Row = tuple[str, str, str, bool | None]


def _drops(attack: dict[str, Any], twin: dict[str, Any], lo: int, hi: int | None) -> float | None:
    """The worst per-round drop of honest mean accuracy (points) vs the twin over rounds lo..hi."""
    a, b = attack["attacks"]["series"], twin["attacks"]["series"]
    n = min(len(a["round"]), len(b["round"]))
    worst = None
    for i in range(n):
        r = a["round"][i]
        if r < lo or (hi is not None and r > hi) or a["acc_mean"][i] is None or b["acc_mean"][i] is None:
            continue
        d = 100 * (b["acc_mean"][i] - a["acc_mean"][i])
        worst = d if worst is None else max(worst, d)
    return None if worst is None else round(worst, 1)


def _pct2(acc: dict[str, Any]) -> str:
    return f"{100 * acc['mean']:.1f}/{100 * acc['min']:.1f}"


def _le(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


def _sybil_rows(name: str, sc: Scenario, r: dict[str, Any], twin: dict[str, Any]) -> list[Row]:
    s = sc.sybil
    a = r["attacks"]
    rows: list[Row] = []
    if s.join_round or s.leave_round:
        during = _drops(r, twin, s.join_round + 1, s.leave_round or None)
        rows.append(
            (name, "honest acc drop vs twin while Sybils present <= 2 pts", f"{during}", _le(during, 2))
        )
    if s.leave_round:
        after = _drops(r, twin, s.leave_round + 3, None)
        rows.append(
            (name, "honest acc drop vs twin 3+ rounds after they leave <= 2 pts", f"{after}", _le(after, 2))
        )
    if s.behaviour == "honest_then_attack":
        attack_from = sc.attack.honest_rounds + 1
        worst = _drops(r, twin, attack_from, None)
        rows.append(
            (name, f"honest acc drop vs twin from round {attack_from} <= 2 pts", f"{worst}", _le(worst, 2))
        )
    acc, tacc = r["honest_accuracy"], twin["honest_accuracy"]
    rows.append(
        (
            name,
            "final honest acc mean/min (twin)",
            f"{_pct2(acc)} ({_pct2(tacc)})",
            None,
        )
    )
    rows.append(
        (name, "max mixing share of one Sybil (<= probation cap)", f"{a['attacker_share_max']}", None)
    )
    ev = r["evictions"]
    rows.append(
        (
            name,
            "Sybils evicted by every honest neighbour",
            f"{ev['attackers_evicted_by_every_honest_neighbour']}/{ev['poisoning_attackers']}",
            None,
        )
    )
    return rows


def _extreme_rows(name: str, sc: Scenario, r: dict[str, Any], twin: dict[str, Any] | None) -> list[Row]:
    att = r["attacks"]["attackers"]
    after = sum(a["mixed_after_first"] for a in att.values())
    mixed = sum(a["mixed_records"] for a in att.values())
    banned = ", ".join(f"{a['banned_by']}" for a in att.values())
    return [
        (
            name,
            "honest records mixing it after its first offence = 0",
            f"{after} (mixed in {mixed})",
            after == 0,
        ),
        (
            name,
            "honest peers that evicted it",
            f"{banned} of {len(r['attacks']['series']['round']) and _honest(r)}",
            None,
        ),
    ]


def _honest(r: dict[str, Any]) -> int:
    return sum(1 for p in r["peers"] if p["honest"])


def _equivocate_rows(name: str, sc: Scenario, r: dict[str, Any], twin: dict[str, Any] | None) -> list[Row]:
    rows: list[Row] = []
    n = _honest(r)
    for a in r["attacks"]["attackers"].values():
        eq = a.get("attack", {}).get("equivocations") or []
        first = eq[0] if eq else None
        late = max(a["banned_rounds"]) - first if a["banned_rounds"] and first is not None else None
        ok = a["banned_by"] == n and late is not None and late <= 2
        rows.append(
            (
                name,
                "banned by every honest peer within 2 rounds of its first equivocation",
                f"banned by {a['banned_by']}/{n}, first equivocation round {first}, last ban +{late}",
                ok,
            )
        )
    hb = r["attacks"]["bans"]["honest_banned"]
    rows.append((name, "honest peers banned (relays penalised) = 0", f"{hb}", hb == 0))
    return rows


def _slow_rows(name: str, sc: Scenario, r: dict[str, Any], twin: dict[str, Any] | None) -> list[Row]:
    assert twin is not None
    a, b = r["attacks"]["round_s"]["p50"], twin["attacks"]["round_s"]["p50"]
    ratio = round(a / b, 2) if a and b else None
    return [(name, "honest s/round p50 <= 1.5x twin", f"{a} s vs {b} s = {ratio}x", _le(ratio, 1.5))]


def _flood_rows(name: str, sc: Scenario, r: dict[str, Any], twin: dict[str, Any] | None) -> list[Row]:
    f = r["attacks"].get("flood", {})
    if not f.get("sent"):
        return [(name, "burst sent", "no", False)]
    refused = f.get("refused_at_honest", {})
    p50, top = f.get("ratio_p50"), f.get("ratio_max")
    met = None if p50 is None or top is None else p50 <= 2 and top <= 2
    d, b = f["during"], f["before"]
    rows: list[Row] = [
        (
            name,
            "honest round time during the burst <= 2x before (p50 and max each)",
            f"p50 {d['p50']}/{b['p50']} s = {p50}x, max {d['max']}/{b['max']} s = {top}x "
            f"({f['count']} announcements sent in {round(f['t'][1] - f['t'][0], 1)} s)",
            met,
        ),
        (
            name,
            "worst honest round during the burst / p50 before",
            f"{d['max']} s / {b['p50']} s = {f['ratio_max_to_before_p50']}x",
            None,
        ),
        (name, "refused at honest peers (by reason)", f"{sum(refused.values())} {refused}", None),
    ]
    if twin is not None:
        rows.append(
            (
                name,
                "honest s/round p50 (twin)",
                f"{r['attacks']['round_s']['p50']} ({twin['attacks']['round_s']['p50']})",
                None,
            )
        )
    return rows


def _closed_rows(name: str, sc: Scenario, r: dict[str, Any], twin: dict[str, Any] | None) -> list[Row]:
    a = r["attacks"]
    served = sum(att["requests_served"] for att in a["attackers"].values())
    refusals = sum(a["refusals"].values())
    return [
        (
            name,
            "Sybils never mixed (max share = 0)",
            f"{a['attacker_share_max']}",
            a["attacker_share_max"] == 0,
        ),
        (name, "refusals counted at honest peers > 0", f"{refusals} {a['refusals']}", refusals > 0),
        (name, "requests served by Sybils (model bytes fetched) = 0", f"{served}", served == 0),
    ]


#: name -> (twin overrides or None, rows)
CASES: dict[str, tuple[dict[str, dict[str, Any]] | None, Callable[..., list[Row]]]] = {
    "sybil_open": ({"sybil": {"count": 0}}, _sybil_rows),
    "sybil_closed": (None, _closed_rows),
    "sybil_sleeper": ({"sybil": {"count": 0}}, _sybil_rows),
    "sybil_sleeper_alie": ({"sybil": {"count": 0}}, _sybil_rows),
    "extreme": (None, _extreme_rows),
    "equivocate": (None, _equivocate_rows),
    "slow": ({"attack": {"kind": "none", "fraction": 0.0}}, _slow_rows),
    "flood": ({"attack": {"kind": "none", "fraction": 0.0}}, _flood_rows),
}


def _load(name: str) -> Scenario:
    if name == "sybil_closed":
        return load_scenario(SCENARIOS / "sybil_open.toml").replace(sybil={"closed": True})
    if name == "sybil_sleeper_alie":
        sc = load_scenario(SCENARIOS / "sybil_sleeper.toml").replace(attack={"then": "alie"})
        return sc
    return load_scenario(SCENARIOS / f"{name}.toml")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m p2pfl.sim.bench_attacks15", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--only", default=",".join(CASES), help="comma-separated cases")
    ap.add_argument("--transport", choices=("memory", "libp2p"), default=None, help="override every case's")
    ap.add_argument("--work", default=None, help="keep each run's report here (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--with-default", action="store_true", help="also run scenarios/default.toml")
    args = ap.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="p2pfl-bench15-"))
    names = [n for n in args.only.split(",") if n]
    for n in names:
        if n not in CASES:
            ap.error(f"unknown case {n!r}; known: {', '.join(CASES)}")
    rows: list[Row] = []
    cache: dict[tuple[str, str], dict[str, Any]] = {}
    for name in names:
        twin_over, fn = CASES[name]
        sc = _load(name)
        if args.transport:
            sc = sc.replace(run={"transport": args.transport})
        started = time.time()
        r = run_scenario(sc, work / name, quiet=True, plots=False)
        twin = None
        if twin_over is not None:
            tsc = sc.replace(**twin_over)
            key = (json.dumps(tsc.to_dict(), sort_keys=True), "")
            if key not in cache:
                cache[key] = run_scenario(tsc, work / f"{name}-twin", quiet=True, plots=False)
            twin = cache[key]
        new = fn(name, sc, r, twin)
        if r["timed_out"]:
            new.append((name, "run finished in its time limit", "TIMED OUT", False))
        rows += new
        print(f"{name}: {time.time() - started:.1f} s", file=sys.stderr)
    if args.with_default:
        r = run_scenario(load_scenario(SCENARIOS / "default.toml"), work / "default", quiet=True, plots=False)
        acc, ev = r["honest_accuracy"], r["evictions"]
        ok = acc["mean"] >= 0.95 and acc["min"] >= 0.93 and ev["false_positive"] == 0
        rows.append(
            (
                "default",
                ">= 95% mean / 93% min honest, 0 false evictions",
                f"{100 * acc['mean']:.1f}/{100 * acc['min']:.1f}, FP {ev['false_positive']}, "
                f"evicted {ev['true_positive']}/{ev['expected']}",
                ok,
            )
        )
    print("| case | target | measured | met |")
    print("|---|---|---|---|")
    for case, target, measured, ok in rows:
        print(f"| {case} | {target} | {measured} | {'-' if ok is None else 'yes' if ok else 'NO'} |")
    if args.json:
        Path(args.json).write_text(json.dumps([list(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
