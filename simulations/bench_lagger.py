"""Issue 16, ``evict_far_against``: is an honest peer that *lags* counted or banned? (session 24, laggard)

``python -m p2pfl.sim.bench_lagger [--partition iid|dirichlet] [--topology complete|rr6] [--peers N]
[--lag 0.05,0.1] [--seed 1,2] [--rounds 60] [--wait-fraction 0.5] [--from-round 0] [--real-time]
[--flag on,off]``

One peer of each run trains honestly (the ``slow`` attack kind's peer: an honest learner on its own data
slice) but takes ``--lag`` simulated seconds longer per round: it waits after training, before it publishes.
Its round starts from its mix of the neighbours' versions as it found them, so what it publishes is that
many of the others' rounds old plus one own update: a stale honest version, the case the review of
``evict_far_against`` replayed (docs/scoring.md, "nearfix", failure modes). The ``slow`` kind's own wait
before a round is replaced; nothing else of the peer changes. Runs are reproducible memory runs
(:mod:`simulations.determinism`; ``--real-time``: the memory engine in real time, ``--lag`` in seconds of
it); ``--wait-fraction`` below 1 lets the others stop waiting for the lagger (with 1.0 their pacing waits
for it and the lag stays near a round).

Printed per run (one JSON line): how many observer rounds passed between two versions of the lagger (the
lag), how many honest neighbours evicted it, how many versions counted towards its eviction, the
quantiles of its ``r``, cosine and loss ratio, and how many of its scored versions were far (``r`` >=
``evict_distance``) and anti-aligned (cosine <= ``cos_bad``) at once, and in which observer rounds; the
margins after each observer's first version of it (largest ``r``, lowest cosine). A measurement harness:
the scorer is only read (:func:`p2pfl.sim.evict_trace.install`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

from p2pfl import peer_rounds
from p2pfl.errors import StateError
from p2pfl.scoring import ScoringConfig

from . import observe, protocol_attacks
from .evict_trace import Row, install
from .runner import run_scenario
from .scenario import parse_scenario

#: every fresh score of the current run (:func:`p2pfl.sim.evict_trace.install`)
_RECORDS: list[Row] = []


@contextmanager
def lagging(lag_s: float, from_round: int = 0) -> Iterator[None]:
    """While open, the ``slow`` peer starts its rounds at once and, from its round ``from_round`` on, waits
    ``lag_s`` after training."""
    laggers: set[int] = set()
    before, train = protocol_attacks.ProtocolAttack.before_round, peer_rounds.RoundLoop._train

    async def mark(self: Any, peer: Any) -> None:
        if self.kind == "slow":
            laggers.add(id(peer.engine))

    async def slow_train(self: Any) -> Any:
        out = await train(self)
        if id(self._p.engine) in laggers and self.round >= from_round:
            await trio.sleep(lag_s)
        return out

    protocol_attacks.ProtocolAttack.before_round = mark  # type: ignore[method-assign]
    peer_rounds.RoundLoop._train = slow_train  # type: ignore[method-assign]
    try:
        yield
    finally:
        protocol_attacks.ProtocolAttack.before_round = before  # type: ignore[method-assign]
        peer_rounds.RoundLoop._train = train  # type: ignore[method-assign]


def scenario(
    partition: str, topology: str, peers: int, seed: int, *, rounds: int, wait_fraction: float, flag: bool
) -> dict[str, Any]:
    """The cell: default.toml's model and scoring on digits, one lagger among ``peers``."""
    topo = {"kind": "random-regular", "degree": 6} if topology == "rr6" else {"kind": "complete"}
    data = {
        "dataset": "digits",
        "partition": partition,
        **({"alpha": 0.3} if partition == "dirichlet" else {}),
    }
    return {
        "run": {"seed": seed, "rounds": rounds, "transport": "memory", "time_limit_s": 600,
                "wait_fraction": wait_fraction},
        "data": data,
        "model": {"kind": "mlp", "hidden": 32, "lr": 0.1, "local_steps": 10, "batch_size": 16},
        "topology": {"peers": peers, **topo},
        "scoring": {"enabled": True, "evict_far_against": flag},
        "attack": {"kind": "slow", "fraction": 1.0 / peers, "period_s": 1.0},
    }  # fmt: skip


def _q(values: list[float]) -> str:
    """Median / extreme (the last of the sorted values)."""
    return "-" if not values else f"{values[len(values) // 2]:.2f}/{values[-1]:.2f}"


def _by_observer(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for x in rows:
        out.setdefault(x["obs"], []).append(x)
    return out


def _extreme(rows: list[Row], keep: Callable[[Row], bool], key: str, pick: Callable[..., Any]) -> Any:
    """``pick`` (min or max) of ``key`` over the rows ``keep`` admits, rounded; None if none."""
    vals = [x[key] for x in rows if keep(x) and x[key] is not None and math.isfinite(x[key])]
    return round(pick(vals), 2) if vals else None


def summarise(
    result: dict[str, Any], records: list[Row], cfg: ScoringConfig, shares: list[tuple[str, int, float]]
) -> dict[str, Any]:
    """What the lagger's observers saw of it (see the module docstring)."""
    lagger = next(p for p in result["peers"] if not p["honest"])
    rows = [x for x in records if x["peer"] == lagger["id"]]
    gaps = sorted(
        float(b["round"] - a["round"]) for v in _by_observer(rows).values() for a, b in itertools.pairwise(v)
    )
    far = cfg.evict_distance or math.inf
    later = [x for v in _by_observer(rows).values() for x in v[1:]]
    far_anti = [x for x in rows if x["r"] >= far and x["cos"] is not None and x["cos"] <= cfg.cos_bad]
    return {
        "lagger_rounds": lagger["rounds"],
        "honest_rounds": min(p["rounds"] for p in result["peers"] if p["honest"]),
        "lag_rounds": _q(gaps),
        "evicted_by": len(lagger["evicted_by"]),
        "honest_false_positive": result["evictions"]["false_positive"],
        "scored": len(rows),
        # a neighbour first heard after the founding rounds is young: weight 0 until it earns passes
        "young": sum(x["status"] == "young" for x in rows),
        "counted_max": max([x["consec"] or 0 for x in rows] or [0]),
        "evidence_max": max([x["bucket"] or 0.0 for x in rows] or [0.0]),
        "r": _q(sorted(x["r"] for x in rows if math.isfinite(x["r"]))),
        # the cosine's median / minimum: sorted descending so that the last is the lowest
        "cos": _q(sorted((x["cos"] for x in rows if x["cos"] is not None), reverse=True)),
        "loss_ratio": _q(sorted(x["loss_ratio"] for x in rows if x["loss_ratio"] is not None)),
        # the margins: the lowest cosine of a far version, the largest r of an anti-aligned one (the
        # lagger's first version per observer left out: it is the farthest, and one version never bans)
        "r_max_later": _extreme(later, lambda x: True, "r", max),
        "cos_min_later": _extreme(later, lambda x: x["cos"] is not None, "cos", min),
        "cos_min_far": _extreme(later, lambda x: x["r"] >= far, "cos", min),
        "r_max_anti": _extreme(later, lambda x: x["cos"] is not None and x["cos"] <= cfg.cos_bad, "r", max),
        "far_anti": len(far_anti),
        "far_anti_rounds": sorted({x["round"] for x in far_anti}),
        **_weight(shares, lagger["id"]),
        "honest_accuracy": result["honest_accuracy"]["mean"],
        "honest_min": result["honest_accuracy"]["min"],
        "lagger_accuracy": lagger.get("final_accuracy"),
    }


def _weight(shares: list[tuple[str, int, float]], lagger: str) -> dict[str, Any]:
    """The lagger's mixing share at its honest neighbours (``simulations.observe``: its weight over the
    mix's total, 0 while a candidate with no weight), over every round it was a candidate and over the
    observer rounds after 10 (the founding rounds and its first versions aside): the mean, the largest,
    and how many of those rounds gave it a share above 0 (its data reached the mix)."""
    mine = [(r, s) for p, r, s in shares if p == lagger]
    late = [s for r, s in mine if r > 10]
    return {
        "share_mean": round(sum(s for _, s in mine) / len(mine), 4) if mine else None,
        "share_mean_r10": round(sum(late) / len(late), 4) if late else None,
        "share_max": max((s for _, s in mine), default=0.0),
        "mixed": f"{sum(s > 0 for _, s in mine)}/{len(mine)}",
    }


@contextmanager
def mixing_shares(out: list[tuple[str, int, float]]) -> Iterator[None]:
    """While open, every simulated peer's round appends (neighbour, its round, share) to ``out`` for
    each non-honest neighbour among its mixing inputs (read only:
    :meth:`simulations.observe.RoundObserver.row`)."""
    row = observe.RoundObserver.row

    def recording(self: Any, peer: Any) -> dict[str, Any]:
        got = row(self, peer)
        out.extend((q, int(peer.round), float(s)) for q, s in got.get("mix", {}).items())
        return got

    observe.RoundObserver.row = recording  # type: ignore[method-assign]
    try:
        yield
    finally:
        observe.RoundObserver.row = row  # type: ignore[method-assign]


def run_cell(
    partition: str,
    topology: str,
    peers: int,
    seed: int,
    lag_s: float,
    *,
    rounds: int = 60,
    wait_fraction: float = 0.5,
    flag: bool = True,
    from_round: int = 0,
    real_time: bool = False,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One reproducible run with a lagger; its summary (:func:`summarise`). ``run``: more ``[run]`` keys
    (e.g. ``wait_before_mix``)."""  # fmt: skip
    records = _RECORDS
    install(records)  # once per process: the wrapper keeps the first list it was given, so one list
    records.clear()
    spec = scenario(partition, topology, peers, seed, rounds=rounds, wait_fraction=wait_fraction, flag=flag)
    spec["run"].update(run or {})
    shares: list[tuple[str, int, float]] = []
    with lagging(lag_s, from_round), mixing_shares(shares), tempfile.TemporaryDirectory() as work:
        result = run_scenario(
            parse_scenario(spec, name="lagger"),
            Path(work),
            quiet=True,
            plots=False,
            reproducible=not real_time,
        )
    if not records:  # the process traced the scorer into another list first (evict_trace.install)
        raise StateError("bench_lagger: no score recorded; was evict_trace.install given another list?")
    cfg = ScoringConfig(evict_far_against=flag)
    cell = {"partition": partition, "topology": topology, "peers": peers, "seed": seed, "lag_s": lag_s,
            "wait_fraction": wait_fraction, "evict_far_against": flag, "from_round": from_round,
            "real_time": real_time, **(run or {})}  # fmt: skip
    return {**cell, **summarise(result, records, cfg, shares)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m p2pfl.sim.bench_lagger")
    ap.add_argument("--partition", default="iid", choices=("iid", "dirichlet"))
    ap.add_argument("--topology", default="complete", choices=("complete", "rr6"))
    ap.add_argument("--peers", type=int, default=5)
    ap.add_argument("--lag", default="0.05,0.1", help="simulated seconds per round, comma-separated")
    ap.add_argument("--seed", default="1,2")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--wait-fraction", type=float, default=0.5)
    ap.add_argument("--from-round", type=int, default=0, help="the lagger's own round it starts lagging at")
    ap.add_argument(
        "--real-time", action="store_true", help="the memory engine in real time (not reproducible)"
    )
    ap.add_argument("--flag", default="on", help="evict_far_against: on, off or on,off")
    a = ap.parse_args(argv)
    for lag in (float(x) for x in a.lag.split(",")):
        for seed in (int(x) for x in a.seed.split(",")):
            for flag in (x == "on" for x in a.flag.split(",")):
                row = run_cell(a.partition, a.topology, a.peers, seed, lag, rounds=a.rounds,
                               wait_fraction=a.wait_fraction, flag=flag, from_round=a.from_round,
                               real_time=a.real_time)  # fmt: skip
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
