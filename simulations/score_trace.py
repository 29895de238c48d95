"""Record every scorer input of one matrix cell, for offline signal measurements (issue 16).

``python -m p2pfl.sim.score_trace --out FILE.pkl [--dataset digits] [--alpha 0.3] [--topology rr6]
[--fraction 0.25] [--attack alie] [--rule default] [--rounds N] [--set SECTION.KEY=VALUE ...]``

Runs one cell of :mod:`simulations.bench_matrix` in the memory engine with
:meth:`p2pfl.scoring.scorer.ContributionScorer.evaluate` wrapped: each call's own model before and after
training, reference centre, neighbour models (stored once per distinct vector), own-data losses and the
records it returned are kept per observer, and written with the plan (peer ids, neighbours, who attacks) as
one pickle. The peer code is untouched. Measurement only: nothing in ``p2pfl`` reads it.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from p2pfl.scoring import scorer as scorer_mod

from .bench_matrix import MATRIX_BASE, Cell, _overrides, cell_scenario
from .plan import make_plan
from .runner import run_scenario
from .scenario import load_scenario


class Recorder:
    """Wraps ``ContributionScorer.evaluate``; one list of calls per scorer instance."""

    def __init__(self) -> None:
        self.vectors: dict[str, np.ndarray] = {}
        self.calls: dict[int, list[dict[str, Any]]] = {}
        self._orig = scorer_mod.ContributionScorer.evaluate

    def _key(self, v: Any) -> str:
        a = np.asarray(v, dtype=np.float32)
        k = hashlib.blake2b(a.tobytes(), digest_size=12).hexdigest()
        self.vectors.setdefault(k, a.copy())
        return k

    def install(self) -> None:
        rec = self
        orig = self._orig

        def evaluate(
            self: Any, own_before: Any, own_after: Any, neighbours: Any, centre: Any, *a: Any, **kw: Any
        ) -> Any:
            out = orig(self, own_before, own_after, neighbours, centre, *a, **kw)
            val_losses = a[0] if a else kw.get("val_losses")
            own_loss = a[1] if len(a) > 1 else kw.get("own_val_loss")
            rec.calls.setdefault(id(self), []).append(
                {
                    "round": self.rounds,
                    "before": rec._key(own_before),
                    "after": rec._key(own_after),
                    "centre": rec._key(centre),
                    "models": {p: rec._key(v) for p, v in neighbours.items()},
                    "val_losses": dict(val_losses) if val_losses else {},
                    "own_loss": own_loss,
                    "only": None if kw.get("only") is None else sorted(kw["only"]),
                    "records": {p: (r.distance, r.cosine, r.combined, r.status) for p, r in out.items()},
                    "heading": {
                        p: (self.heading.lag(p), self.heading.shift(p), self.heading.weight(p))
                        for p in neighbours
                    }
                    if self.heading is not None
                    else {},
                    "echo": {p: self._echo_weight(p) for p in neighbours},
                    "weights": dict(
                        zip(sorted(neighbours), self.weights_for(sorted(neighbours)).tolist(), strict=True)
                    ),
                }
            )
            return out

        scorer_mod.ContributionScorer.evaluate = evaluate  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m p2pfl.sim.score_trace")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--alpha", default="0.3")
    ap.add_argument("--topology", default="rr6")
    ap.add_argument("--fraction", default="0.25")
    ap.add_argument("--attack", default="alie")
    ap.add_argument("--rule", default="default")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args(argv)
    base = load_scenario(MATRIX_BASE)
    base = base.replace(run={"rounds": args.rounds})
    base = _overrides(base, args.set, ap)
    cell = Cell(args.dataset, args.alpha, args.topology, args.fraction, args.attack, args.rule)
    sc = cell_scenario(base, cell)
    plan = make_plan(sc)
    rec = Recorder()
    rec.install()
    work = Path(tempfile.mkdtemp(prefix="p2pfl-trace-"))
    res = run_scenario(sc, work / cell.name, quiet=True, plots=False)
    ids = plan.peer_ids
    nbrs = {ids[p.index]: {ids[j] for j in p.neighbours} for p in plan.peers}
    honest = {ids[p.index]: p.honest for p in plan.peers}
    # each scorer is the one peer whose neighbour set holds every key it scored
    observers: dict[int, str] = {}
    for sid, calls in rec.calls.items():
        seen = set().union(*(c["models"].keys() for c in calls))
        match = [p for p, n in nbrs.items() if seen <= n]
        if len(match) == 1:
            observers[sid] = match[0]
    out = {
        "cell": cell.name,
        "honest": honest,
        "neighbours": {p: sorted(n) for p, n in nbrs.items()},
        "calls": {observers[s]: c for s, c in rec.calls.items() if s in observers},
        "vectors": rec.vectors,
        "accuracy": res["honest_accuracy"],
        "peers": res.get("peers", []),
    }
    Path(args.out).write_bytes(pickle.dumps(out))
    print(cell.name, res["honest_accuracy"], "observers", len(observers), "of", len(rec.calls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
