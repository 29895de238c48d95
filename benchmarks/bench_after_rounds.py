"""Finished peers: keep mixing, only serve, or answer slower neighbours (p2pfl.sim.after_rounds).

    python benchmarks/bench_after_rounds.py [--scenarios default,churn,scale100,crash] [--seeds 3,4]
        [--afters mix,serve,respond] [--ref OTHER_PYTHON] [--time-limit S]

Each scenario runs once per seed and behaviour, on the memory engine and the real clock, in a child process
(``python -m p2pfl.sim``); the table gives the honest peers' final accuracy (mean, min: what a slow peer
ends at), the wall and the child's CPU seconds, and each row's ratio against the "mix" row of the
same scenario and seed (measured in the same invocation). ``default`` is simulations/scenarios/default.toml
on the memory engine; ``churn`` simulations/scenarios/churn.toml (a ring: a churned peer falls behind);
``scale100`` memory1000.toml at 100 peers with churn (leave 0.05, rejoin 0.5), 10 rounds; ``crash`` the churn
ring where peer 3 crashes at round 5 and is down 30 s, so its neighbours finish meanwhile (a restarted peer
among finished ones). ``--ref``: each row also runs with that interpreter (another checkout's venv: the
reference code), alternated with this one; a run that hit ``--time-limit`` is marked "(cap)".
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "simulations" / "scenarios"


def _scenario(name: str, seed: int, after: str) -> str:
    if name == "default":
        text = (
            (SCENARIOS / "default.toml").read_text().replace('transport = "libp2p"', 'transport = "memory"')
        )
    elif name == "churn":
        text = (SCENARIOS / "churn.toml").read_text()
    elif name == "crash":
        text = (SCENARIOS / "churn.toml").read_text()
        text = text.replace(
            "{ peer = 3, round = 5, downtime_s = 2.0 }", "{ peer = 3, round = 5, downtime_s = 30.0 }"
        )
    elif name == "scale100":
        text = (SCENARIOS / "memory1000.toml").read_text().replace("peers = 1000", "peers = 100")
        text = text.replace("synthetic_samples = 100000", "synthetic_samples = 10000")
        text += "\n[churn]\nleave = 0.05\nrejoin = 0.5\n"
    else:
        raise SystemExit(f"unknown scenario {name!r}")
    text = re.sub(r"(?m)^seed = \d+\n", "", text)
    return text.replace("[run]\n", f'[run]\nseed = {seed}\nafter_rounds = "{after}"\n', 1)


def _run(
    name: str, seed: int, after: str, tmp: Path, *, python: str = sys.executable, limit: float | None = None
) -> dict[str, float]:
    text = _scenario(name, seed, after)
    if limit is not None:
        text = re.sub(r"(?m)^time_limit_s = .*\n", "", text).replace(
            "[run]\n", f"[run]\ntime_limit_s = {limit}\n", 1
        )
    path = tmp / f"{name}_{seed}_{after}_{abs(hash(python))}.toml"
    path.write_text(text)
    out = tmp / path.stem
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    cmd = [python, "-m", "p2pfl.sim", str(path), "--out", str(out), "--quiet"]
    # (run from the temporary folder: ``-m`` puts the working directory first on sys.path, so a run from a
    # checkout would import that checkout's p2pfl whatever the interpreter)
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=tmp)
    wall = time.monotonic() - t0
    after_ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after_ru.ru_utime - before.ru_utime) + (after_ru.ru_stime - before.ru_stime)
    if not (out / "results.json").exists():  # (written whether or not the run hit its time limit)
        raise SystemExit(f"{cmd} failed:\n{done.stderr[-3000:]}")
    res = json.loads((out / "results.json").read_text())
    acc = res["honest_accuracy"]
    return {"mean": acc["mean"], "min": acc["min"], "wall": wall, "cpu": cpu, "cap": res["timed_out"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="default,churn,scale100")
    ap.add_argument("--seeds", default="3,4")
    ap.add_argument("--afters", default="mix,serve,respond", help="the first is each row's reference")
    ap.add_argument("--ref", default=None, help="also run each row with this python (reference code)")
    ap.add_argument("--time-limit", type=float, default=None, help="the scenarios' [run] time_limit_s")
    args = ap.parse_args()
    codes = [("this", sys.executable)] + ([("ref", args.ref)] if args.ref else [])
    print(
        "| scenario | seed | after | code | mean % | min % | wall s | CPU s | CPU vs first | min vs first |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for name in args.scenarios.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                first: dict[str, dict[str, float]] = {}
                for after in args.afters.split(","):
                    for code, python in codes:
                        r = _run(name, seed, after, Path(d), python=python, limit=args.time_limit)
                        ref = first.setdefault(code, r)
                        cap = " (cap)" if r["cap"] else ""
                        print(
                            f"| {name} | {seed} | {after} | {code} | {100 * r['mean']:.1f} | "
                            f"{100 * r['min']:.1f} | {r['wall']:.1f}{cap} | {r['cpu']:.1f} | "
                            f"{r['cpu'] / ref['cpu']:.2f}x | {100 * (r['min'] - ref['min']):+.1f} |",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
