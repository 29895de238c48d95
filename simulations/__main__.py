"""``python -m p2pfl.sim SCENARIO --out DIR [--quiet]``: the same command as ``p2pfl sim`` (same help, checks,
one-line errors and exit codes), for environments where the console script is not on PATH."""

from __future__ import annotations

import sys

from p2pfl.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    return cli_main(["sim", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
