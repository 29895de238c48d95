"""The scorer's evidence in either round order (``[run] wait_before_mix``), on the simulated clock: the
runnable command behind docs/scoring.md's "Against, after the loss is gone" tables (issue 16, order17r).

    python -m p2pfl.sim.bench_order scale [--peers 100,200] [--order same,old] [--rounds 10] [--set S.K=V]
    python -m p2pfl.sim.bench_order report5 [--seeds 1-8] [--order same,old] [--set SECTION.KEY=VALUE]
    python -m p2pfl.sim.bench_order lagger [bench_lagger's options] [--order same,old]

``scale``: bench_scale's scenario (``simulations/scenarios/memory1000.toml`` at N peers, 80 samples each,
a 10,000-sample test set, 10 % sign-flippers on a random 6-regular graph, logistic regression), one
reproducible run per size and order: honest mean / min accuracy, (honest neighbour, attacker) pairs
evicted, false evictions, CPU seconds. ``report5``: ``tests/rollout/test_report.py``'s 5-peer scenario (IID
digits, one sign-flipper, 8 rounds) per seed: the honest peers that evicted it and the round of the last
eviction. ``lagger``: ``p2pfl.sim.bench_lagger``'s cells with the round order set. One JSON line per run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from p2pfl.sim import bench_lagger, bench_matrix, runner
from p2pfl.sim.runner import run_scenario
from p2pfl.sim.scenario import Scenario, load_scenario, parse_scenario

#: tests/rollout/test_report.py's SMALL scenario (the seed is set per run)
REPORT5: dict[str, dict[str, Any]] = {
    "run": {"rounds": 8, "transport": "memory", "time_limit_s": 120},
    "data": {"dataset": "digits", "partition": "iid"},
    "model": {"kind": "mlp", "hidden": 32, "local_steps": 10},
    "topology": {"peers": 5, "kind": "complete"},
    "attack": {"kind": "signflip", "fraction": 0.2},
}


def _run(sc: Scenario) -> dict[str, Any]:
    """One reproducible run of ``sc`` (no plots); its results and CPU seconds."""
    started = time.process_time()
    with tempfile.TemporaryDirectory(prefix="bench_order-") as work:
        res = run_scenario(sc, Path(work), quiet=True, plots=False, reproducible=True)
    return {**res, "cpu_s": round(time.process_time() - started, 1)}


def _figures(res: dict[str, Any]) -> dict[str, Any]:
    ev = res["evictions"]
    acc = res["honest_accuracy"]
    return {
        "mean": acc["mean"],
        "min": acc["min"],
        "pairs": [ev["true_positive"], ev["expected"]],
        "false": ev["false_positive"],
        "cpu_s": res["cpu_s"],
    }


def scale(peers: int, rounds: int, same_round: bool, edit: Any = lambda sc: sc) -> dict[str, Any]:
    """bench_scale's scenario at ``peers`` peers in the given round order (``edit``: ``--set``)."""
    base = load_scenario(str(Path(runner.__file__).resolve().parent / "scenarios" / "memory1000.toml"))
    samples = peers * 80 + 10_000
    sc = base.replace(
        run={"rounds": rounds, "time_limit_s": 3600, "wait_before_mix": same_round},
        topology={"peers": peers},
        data={"synthetic_samples": samples, "test_fraction": 10_000 / samples},
    )
    return {"peers": peers, "wait_before_mix": same_round, **_figures(_run(edit(sc)))}


def report5(seed: int, same_round: bool, edit: Any = lambda sc: sc) -> dict[str, Any]:
    """The 5-peer scenario of test_report at ``seed``: who evicted the sign-flipper, and by which round."""
    spec = {**REPORT5, "run": {**REPORT5["run"], "seed": seed, "wait_before_mix": same_round}}
    res = _run(edit(parse_scenario(spec, name="report5")))
    rounds = [r for r, n in zip(res["series"]["round"], res["series"]["evictions"], strict=True) if n]
    return {
        "seed": seed,
        "wait_before_mix": same_round,
        "evicted_by_all": res["evictions"]["attackers_evicted_by_every_honest_neighbour"],
        "last_eviction_round": max(rounds, default=None),
        **_figures(res),
    }


@contextlib.contextmanager
def _round_order(same_round: bool) -> Iterator[None]:
    """bench_lagger's cells with ``[run] wait_before_mix`` set."""
    plain = bench_lagger.scenario

    def ordered(*args: Any, **kwargs: Any) -> dict[str, Any]:
        spec = plain(*args, **kwargs)
        spec["run"]["wait_before_mix"] = same_round
        return spec

    bench_lagger.scenario = ordered
    try:
        yield
    finally:
        bench_lagger.scenario = plain


def _ints(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(x) for x in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m p2pfl.sim.bench_order")
    ap.add_argument("what", choices=("scale", "report5", "lagger"))
    ap.add_argument("--order", default="same", help="same (wait_before_mix), old, or same,old")
    ap.add_argument("--peers", default="100,200", help="scale: sizes; lagger: peers (one)")
    ap.add_argument("--rounds", type=int, default=10, help="scale and lagger")
    ap.add_argument("--seeds", default="1-8", help="report5 and lagger: 1-8 or 1,2")
    ap.add_argument("--partition", default="iid", choices=("iid", "dirichlet"))
    ap.add_argument("--topology", default="complete", choices=("complete", "rr6"))
    ap.add_argument("--lag", default="0.05,0.1", help="lagger: simulated seconds per round")
    ap.add_argument("--wait-fraction", type=float, default=0.5)
    ap.add_argument("--from-round", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="scale, report5")
    a = ap.parse_args(argv)
    for same in (x == "same" for x in a.order.split(",")):
        for row in _rows(a, same, lambda sc: bench_matrix._overrides(sc, a.set, ap)):
            print(json.dumps({**row, **({"set": a.set} if a.set else {})}), flush=True)
    return 0


def _rows(a: argparse.Namespace, same: bool, edit: Any) -> Iterator[dict[str, Any]]:
    if a.what == "scale":
        yield from (scale(n, a.rounds, same, edit) for n in _ints(a.peers))
    elif a.what == "report5":
        yield from (report5(s, same, edit) for s in _ints(a.seeds))
    else:
        with _round_order(same):
            for lag in (float(x) for x in a.lag.split(",")):
                for seed in _ints(a.seeds):
                    cell = bench_lagger.run_cell(a.partition, a.topology, int(a.peers), seed, lag,
                                                 rounds=a.rounds, wait_fraction=a.wait_fraction,
                                                 from_round=a.from_round)  # fmt: skip
                    yield {**cell, "wait_before_mix": same}


if __name__ == "__main__":
    sys.exit(main())
