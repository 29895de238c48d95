"""``python -m p2pfl.sim SCENARIO --out DIR [--quiet]``: the same as ``p2pfl sim``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .runner import run_cli


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m p2pfl.sim", description="run a p2pfl simulation scenario")
    ap.add_argument("scenario")
    ap.add_argument("--out", required=True)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    return run_cli(args.scenario, Path(args.out), quiet=args.quiet)


if __name__ == "__main__":
    sys.exit(main())
