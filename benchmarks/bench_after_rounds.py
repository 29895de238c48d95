"""Finished peers: keep mixing, only serve, or answer slower neighbours (p2pfl.sim.after_rounds).

    python benchmarks/bench_after_rounds.py [--scenarios default,churn,scale100] [--seeds 3,4]

Each scenario runs once per seed and behaviour, on the memory engine and the real clock, in a child process
(``python -m p2pfl.sim``); the table gives the honest peers' final accuracy (mean, min: what a slow peer
ends at), the wall and the child's CPU seconds, and each row's ratio against the "mix" row of the
same scenario and seed (measured in the same invocation). ``default`` is simulations/scenarios/default.toml
on the memory engine; ``churn`` simulations/scenarios/churn.toml (a ring: a churned peer falls behind);
``scale100`` memory1000.toml at 100 peers with churn (leave 0.05, rejoin 0.5), 10 rounds.
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
    elif name == "scale100":
        text = (SCENARIOS / "memory1000.toml").read_text().replace("peers = 1000", "peers = 100")
        text = text.replace("synthetic_samples = 100000", "synthetic_samples = 10000")
        text += "\n[churn]\nleave = 0.05\nrejoin = 0.5\n"
    else:
        raise SystemExit(f"unknown scenario {name!r}")
    text = re.sub(r"(?m)^seed = \d+\n", "", text)
    return text.replace("[run]\n", f'[run]\nseed = {seed}\nafter_rounds = "{after}"\n', 1)


def _run(name: str, seed: int, after: str, tmp: Path) -> dict[str, float]:
    path = tmp / f"{name}_{seed}_{after}.toml"
    path.write_text(_scenario(name, seed, after))
    out = tmp / path.stem
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "p2pfl.sim", str(path), "--out", str(out), "--quiet"],
        check=True,
        capture_output=True,
    )
    wall = time.monotonic() - t0
    after_ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after_ru.ru_utime - before.ru_utime) + (after_ru.ru_stime - before.ru_stime)
    res = json.loads((out / "results.json").read_text())
    acc = res["honest_accuracy"]
    return {"mean": acc["mean"], "min": acc["min"], "wall": wall, "cpu": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="default,churn,scale100")
    ap.add_argument("--seeds", default="3,4")
    args = ap.parse_args()
    print("| scenario | seed | after | mean % | min % | wall s | CPU s | CPU vs mix | min vs mix |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for name in args.scenarios.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                ref = None
                for after in ("mix", "serve", "respond"):
                    r = _run(name, seed, after, Path(d))
                    ref = ref or r
                    print(
                        f"| {name} | {seed} | {after} | {100 * r['mean']:.1f} | {100 * r['min']:.1f} | "
                        f"{r['wall']:.1f} | {r['cpu']:.1f} | {r['cpu'] / ref['cpu']:.2f}x | "
                        f"{100 * (r['min'] - ref['min']):+.1f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
