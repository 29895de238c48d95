"""Who keeps an attacker's weight up after round 10: issue 16's "held" target per (observer, attacker) pair.

``python -m p2pfl.sim.hold_trace [bench_matrix axis options, one cell] [--set SECTION.KEY=VALUE ...]
[--seeds 1,2] [--rounds 40] [--after 10] [--reproducible] [--persistence]``

Runs one :mod:`simulations.bench_matrix` cell per seed in the memory engine and, for every honest observer and
every attacker among its neighbours, prints the rounds after ``--after`` in which the attacker kept more than
0.1 of the observer's mix, in two measures:

* ``share``: the matrix's (``simulations.observe``): the attacker's *weight* over the own weight plus the
  neighbours' weights. For the mean it is the attacker's part of the result.
* ``pull``: its part of the *result*. The geometric median is a weighted mean of its (clipped) rows with the
  Weiszfeld weights ``b_i = w_i / |x_i - z|`` at the median ``z``, so ``b_a / sum(b)`` is exactly the
  coefficient of the attacker's row in the mix: a row far from the median pulls less than its weight says,
  a row in the dense middle (ALIE, IPM) more. For the mean it equals ``share``; other rules are not
  decomposed (``-``).

and the observer's count of attacking neighbours (at least half: an "exposed" observer, which no rule can
protect). ``--persistence`` also prints the quantiles of the persistent-distance signal's windowed smallest
``r`` (each full window, every observer-neighbour pair), honest neighbours and attackers apart: what
docs/scoring.md's thresholds are set against. A measurement harness:
:func:`p2pfl.protocol.rounds.aggregate` and ``PersistentDistance.observe`` are wrapped to keep what they see,
the peer code is untouched.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from p2pfl.aggregation import aggregate, geometric_median, self_centred_clip
from p2pfl.aggregation.pipeline import _weighted_median
from p2pfl.protocol import rounds as rounds_mod
from p2pfl.scoring import persistence as persistence_mod

from . import bench_matrix as bm
from . import observe
from .plan import make_plan
from .runner import run_scenario
from .scenario import load_scenario

HOLD = 0.1
_last: dict[str, Any] = {}
#: (neighbour id, windowed smallest r) for every full window, while :func:`record_persistence` is installed
_kept: list[tuple[str, float]] = []


def pull_shares(
    config: Any, own: Any, stack: Any, weights: Any, own_weight: float | None
) -> list[float] | None:
    """Each weighted neighbour row's coefficient in the mix (in order of the rows of weight > 0), or None for
    a rule that is not a weighted mean of its rows (median, trimmed mean, Krum) or when NNM mixed the rows."""
    own_v = np.asarray(own, np.float32)
    nb = np.asarray(stack, np.float32)
    w_nb = np.ones(nb.shape[0]) if weights is None else np.asarray(weights, np.float64)
    keep = w_nb > 0
    nb, w_nb = nb[keep], w_nb[keep]
    if nb.shape[0] == 0 or config.rule not in ("geomed", "mean"):
        return None
    w = np.concatenate(([config.own_weight if own_weight is None else own_weight], w_nb))
    if config.uses_nnm(nb.shape[0] + 1):
        return None
    if config.self_clip_scale is not None:
        dists = np.linalg.norm(nb - own_v, axis=1)
        equal = bool(np.all(w[1:] == w[1]))
        radius = config.self_clip_scale * (
            float(np.median(dists)) if equal else _weighted_median(dists, w[1:])
        )
        if radius > 0:
            nb = self_centred_clip(own_v, nb, radius)
    x = np.vstack([own_v[None, :], nb])
    if config.rule == "mean":
        b = w
    else:
        z = geometric_median(x, w, eps=config.gm_eps, tol=config.gm_tol, max_iter=config.gm_max_iter)
        b = w / np.maximum(np.linalg.norm(x - z, axis=1), config.gm_eps)
    return [float(v) for v in (b / b.sum())[1:]]


def install() -> None:
    """Wrap the engine's ``aggregate`` (keeps the last call's pull shares) and the observer's trace row (adds
    ``pull``: attacker -> its coefficient in the round's mix). Idempotent."""
    if getattr(rounds_mod, "_hold_traced", False):
        return

    def recording(config: Any, own: Any, stack: Any, weights: Any = None, **kw: Any) -> Any:
        _last["pull"] = pull_shares(config, own, stack, weights, kw.get("own_weight"))
        return aggregate(config, own, stack, weights, **kw)

    rounds_mod.aggregate = recording  # type: ignore[attr-defined,assignment]  # (the name rounds.py calls)
    row = observe.RoundObserver.row
    bind = observe.RoundObserver.bind

    def binding(self: Any, peer: Any) -> None:
        bind(self, peer)
        finish = peer.engine.finish_round

        def tap(*args: Any, **kwargs: Any) -> Any:
            out = finish(*args, **kwargs)
            pulls = _last.pop("pull", None)
            mixed = [c.peer for c in getattr(out, "contributions", ()) if c.weight > 0]
            self._pull = None if pulls is None else dict(zip(mixed, pulls, strict=False))
            return out

        peer.engine.finish_round = tap

    def with_pull(self: Any, peer: Any) -> dict[str, Any]:
        out = row(self, peer)
        pulls = getattr(self, "_pull", None)
        if pulls is not None:
            out["pull"] = {p: round(v, 4) for p, v in pulls.items() if p in self.attackers}
        self._pull = None
        return out

    observe.RoundObserver.bind = binding  # type: ignore[method-assign]
    observe.RoundObserver.row = with_pull  # type: ignore[method-assign]
    rounds_mod._hold_traced = True  # type: ignore[attr-defined]


def record_persistence() -> None:
    """Wrap :meth:`PersistentDistance.observe` to keep each full window's smallest ``r``. Idempotent."""
    if getattr(persistence_mod, "_hold_traced", False):
        return
    observe_r = persistence_mod.PersistentDistance.observe

    def keeping(self: Any, peer: str, r: float) -> float:
        kept = observe_r(self, peer, r)
        if len(self._seen[peer]) == self.config.window:  # (observe just filled it: the peer is there)
            _kept.append((peer, kept))
        return kept

    persistence_mod.PersistentDistance.observe = keeping  # type: ignore[method-assign]
    persistence_mod._hold_traced = True  # type: ignore[attr-defined]


def report_persistence(output: Any) -> None:
    """Print the windowed smallest ``r`` kept since the last call, honest neighbours and attackers apart."""
    plan = output.plan
    bad = {plan.peer_ids[q.index] for q in plan.peers if not q.honest}
    for name, attacker in (("honest", False), ("attacking", True)):
        v = np.asarray([k for p, k in _kept if (p in bad) == attacker], dtype=np.float64)
        if v.size:
            p90, p99, top = np.quantile(v, [0.9, 0.99, 1.0])
            at3, at4 = (100 * float(np.mean(v >= t)) for t in (3, 4))
            print(
                f"  persistence r, {name} neighbours ({v.size} windows): p90 {p90:.2f} p99 {p99:.2f} max "
                f"{top:.2f}; >= 3: {at3:.1f} %, >= 4: {at4:.1f} %"
            )
    _kept.clear()


def report(output: Any, after: int) -> None:
    """Print the pairs that kept more than ``HOLD`` after round ``after``, in both measures."""
    plan = output.plan
    att = {q.index for q in plan.peers if not q.honest}
    nbrs = {q.index: q.neighbours for q in plan.peers}
    counts = {"share": [0, 0], "pull": [0, 0]}  # pairs over HOLD after the round: all, minority observers
    pairs = 0
    for p in output.peers:
        if not p["honest"]:
            continue
        o, trace = p["index"], p.get("trace", [])
        n_att = sum(1 for j in nbrs[o] if j in att)
        for a in sorted(j for j in nbrs[o] if j in att):
            aid, pairs = plan.peer_ids[a], pairs + 1
            line = []
            for kind in ("share", "pull"):
                key = "mix" if kind == "share" else "pull"
                late = [
                    (t + 1, row[key][aid])
                    for t, row in enumerate(trace)
                    if t + 1 > after and aid in row.get(key, {}) and row[key][aid] > HOLD
                ]
                if late:
                    counts[kind][0] += 1
                    counts[kind][1] += 2 * n_att < len(nbrs[o])
                    peak = max(v for _, v in late)
                    line.append(f"{kind} {len(late)} rounds (r{late[0][0]}-{late[-1][0]}, max {peak:.2f})")
            if line:
                who = f"observer {o:2d} ({n_att}/{len(nbrs[o])} attackers), attacker {a:2d}"
                print(f"  {who}: {'; '.join(line)}")
    (share, share_minority), (pull, pull_minority) = counts["share"], counts["pull"]
    print(
        f"  pairs over {HOLD} after round {after} (of {pairs}): share {share} ({share_minority} at "
        f"Byzantine-minority observers), pull {pull} ({pull_minority})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m p2pfl.sim.hold_trace")
    for axis in bm.AXES:
        ap.add_argument(f"--{axis}", default="base")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--after", type=int, default=10)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--reproducible", action="store_true", help="simulated clock: bit-for-bit A/B runs")
    ap.add_argument("--persistence", action="store_true", help="also the persistent-distance r quantiles")
    args = ap.parse_args(argv)
    base = bm._overrides(load_scenario(bm.MATRIX_BASE).replace(run={"rounds": args.rounds}), args.set, ap)
    cell = bm.Cell(*(getattr(args, a) for a in bm.AXES))
    install()
    if args.persistence:
        record_persistence()
    from . import attack_metrics as am

    captured: dict[str, Any] = {}
    metrics = am.attack_metrics

    def capture(output: Any) -> dict[str, Any]:
        captured["out"] = output
        return metrics(output)

    am.attack_metrics = capture
    work = Path(tempfile.mkdtemp(prefix="p2pfl-hold-"))
    for seed in [int(s) for s in args.seeds.split(",")]:
        sc = bm.cell_scenario(base.replace(run={"seed": seed}), cell)
        make_plan(sc)
        r = run_scenario(sc, work / f"s{seed}", quiet=True, plots=False, reproducible=args.reproducible)
        acc = r["honest_accuracy"]
        print(f"{cell.name} seed {seed}: {100 * acc['mean']:.1f} / {100 * acc['min']:.1f}")
        report(captured["out"], args.after)
        if args.persistence:
            report_persistence(captured["out"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
