"""Link rotation against the attacker that knows its rule (``[attack] redial``; docs/learning.md, "The rest
of a closed link").

``python -m p2pfl.sim.bench_redial [--kind gaussian,signflip,alie] [--seed 1,2] [--rounds 40] [--scoring]
[--variants "LABEL;..."] [--json OUT]``

Per attack kind and seed, 16 peers on a random 4-regular graph at Dirichlet 0.3 with 25 % attackers, on the
simulated clock (reproducible), run as:

* ``static``: no rotation, the attackers link as the topology says; ``static+all``: they dial every peer;
* ``rotation``: ``rotate_every = 2`` with the default rest (``rotate_cooldown``), attackers as the topology
  says: **the reference** every other row's ratio is taken against;
* ``rotation+F``: the attackers redial in form F (``closed``, ``all``, ``refresh``), with the default rest
  and, as ``rest 0``, without it (``rotate_cooldown = 0``: no rest and no age memory);
* ``, chosen``: ``mix_scope = "chosen"`` (the library's default since session 36), every honest peer mixes
  only the links it chose: the topology's, and with rotation the ones its rotation dialled (an attacker's
  own dials then link it, but do not put it in the mix). Rows without it run ``mix_scope = "connected"``.

Printed: a markdown table of honest accuracy (mean / min, %), the attackers' share of the honest peers'
links after round 4 and how often they held half or more of a peer's links (``exposed``), each with its
ratio to the reference of the same kind and seed, and the attackers' summed share of an honest peer's
mix (mean over the honest peers and the rounds after round 4). ``--scoring``: scoring on (with
``young_rounds = 0``, as rotation wants); off by default, so that only links decide who is mixed and
nobody is evicted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

from .runner import run_scenario
from .scenario import parse_scenario

#: (label, rotate_every, rotate_cooldown or None for the default, redial, mix_scope)
Variant = tuple[str, int, float | None, str, str]
VARIANTS: tuple[Variant, ...] = (
    ("static", 0, None, "off", "connected"),
    ("static+all", 0, None, "all", "connected"),
    ("static+all, chosen", 0, None, "all", "chosen"),
    ("static, chosen", 0, None, "off", "chosen"),
    ("rotation", 2, None, "off", "connected"),
    ("rotation+closed, rest 0", 2, 0.0, "closed", "connected"),
    ("rotation+closed", 2, None, "closed", "connected"),
    ("rotation+all, rest 0", 2, 0.0, "all", "connected"),
    ("rotation+all", 2, None, "all", "connected"),
    ("rotation+refresh, rest 0", 2, 0.0, "refresh", "connected"),
    ("rotation+refresh", 2, None, "refresh", "connected"),
    ("rotation, chosen", 2, None, "off", "chosen"),
    ("rotation+all, chosen", 2, None, "all", "chosen"),
    ("rotation+all, chosen, rest 0", 2, 0.0, "all", "chosen"),
    ("rotation+refresh, chosen, rest 0", 2, 0.0, "refresh", "chosen"),
)
REFERENCE = "rotation"


def scenario(kind: str, seed: int, rounds: int, variant: Variant, scoring: bool) -> Any:
    _label, every, cooldown, redial, scope = variant
    run: dict[str, Any] = {
        "seed": seed,
        "rounds": rounds,
        "transport": "memory",
        "rotate_every": every,
        "mix_scope": scope,
    }
    if cooldown is not None:
        run["rotate_cooldown"] = cooldown
    return parse_scenario(
        {
            "run": run,
            "data": {"dataset": "digits", "partition": "dirichlet", "alpha": 0.3},
            "model": {"kind": "logreg", "local_steps": 10},
            "topology": {"peers": 16, "kind": "random-regular", "degree": 4},
            "attack": {"kind": kind, "fraction": 0.25, "sigma": 0.05, "redial": redial},
            "scoring": {"young_rounds": 0} if scoring else {"enabled": False},
        },
        name=f"redial-{kind}-{redial}",
    )


def measure(
    kind: str, seed: int, rounds: int, scoring: bool, only: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """One kind and seed: every variant, or those labelled in ``only`` and the reference."""
    rows = []
    for variant in VARIANTS:
        if only is not None and variant[0] not in only and variant[0] != REFERENCE:
            continue
        sc = scenario(kind, seed, rounds, variant, scoring)
        with tempfile.TemporaryDirectory() as d:
            r = run_scenario(sc, Path(d), quiet=True, plots=False, reproducible=True)
        acc, links = r["honest_accuracy"], r["attacks"]["links"]
        series = r["attacks"]["series"]
        mixed = [
            s
            for rnd, s in zip(series["round"], series["attacker_share_total"], strict=True)
            if rnd > 4 and s is not None
        ]
        rows.append(
            {
                "kind": kind,
                "seed": seed,
                "variant": variant[0],
                "acc_mean": acc["mean"],
                "acc_min": acc["min"],
                "share": links["attacker_share"],
                "exposed": links["exposed"],
                "mix": round(sum(mixed) / len(mixed), 4) if mixed else None,
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _ratio(x: float | None, ref: float | None) -> str:
    return f"{x / ref:.2f}" if x is not None and ref else "-"


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| kind | seed | variant | honest acc mean / min (%) | attacker link share | ratio | exposed "
        "| ratio | attackers' mix share | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ref = next(
            r for r in rows if (r["kind"], r["seed"], r["variant"]) == (row["kind"], row["seed"], REFERENCE)
        )
        out.append(
            f"| {row['kind']} | {row['seed']} | {row['variant']} | {100 * row['acc_mean']:.1f} / "
            f"{100 * row['acc_min']:.1f} | {row['share']:.3f} | {_ratio(row['share'], ref['share'])} | "
            f"{row['exposed']:.3f} | {_ratio(row['exposed'], ref['exposed'])} | {_fmt(row.get('mix'))} | "
            f"{_ratio(row.get('mix'), ref.get('mix'))} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m p2pfl.sim.bench_redial", description=__doc__.split("\n")[0])
    ap.add_argument("--kind", default="gaussian", help="comma list of [attack] kinds (default: gaussian)")
    ap.add_argument("--seed", default="1", help="comma list of [run] seeds")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--scoring", action="store_true", help="scoring on (young_rounds = 0)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--variants", help="variant labels to run, separated by ; (the reference always runs)")
    a = ap.parse_args(argv)
    rows = [
        row
        for kind in a.kind.split(",")
        for seed in (int(s) for s in a.seed.split(","))
        for row in measure(kind, seed, a.rounds, a.scoring, a.variants.split(";") if a.variants else None)
    ]
    print(table(rows))
    if a.json is not None:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
