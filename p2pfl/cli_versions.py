"""``p2pfl versions list | show | promote | rollback``: a peer's versions and what it serves.

``list`` and ``show`` read the verified version log; ``promote`` and ``rollback`` append a signed record with
the peer's key and refuse while the peer runs (p2pfl.rollout.offline says why).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

_COLUMNS = ("val_accuracy", "val_f1", "val_auc", "delta_auc", "delta_f1")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:+.4f}" if abs(x) < 1 and x < 0 else f"{x:.4f}"


def _cmd_list(args: argparse.Namespace) -> int:
    from p2pfl.rollout.offline import rows

    table, state, _ = rows(Path(args.dir))
    if args.json:
        out = {
            "serving": state.serving,
            "candidate": state.candidate,
            "phase": state.phase,
            "previous": list(state.previous),
            "versions": [
                {"seq": r.seq, "round": r.round, "roles": list(r.roles), "metrics": r.metrics} for r in table
            ],
        }
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'seq':>6} {'round':>6} " + " ".join(f"{c:>12}" for c in _COLUMNS) + "  roles")
    for r in table:
        cells = " ".join(f"{_num(r.metrics.get(c)):>12}" for c in _COLUMNS)
        print(f"{r.seq:>6} {r.round:>6} {cells}  {','.join(r.roles)}")
    print(f"serving {state.serving}, candidate {state.candidate} ({state.phase or '-'})")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from p2pfl.errors import ConfigError
    from p2pfl.rollout.offline import history, rows

    table, _, records = rows(Path(args.dir))
    match = [r for r in table if r.seq == args.seq]
    if not match:
        raise ConfigError(f"seq {args.seq} is not a version in {args.dir}")
    row = match[0]
    rec = next(r for r in records if r.event == "version" and r.seq == args.seq)
    out: dict[str, Any] = {
        "seq": row.seq,
        "round": row.round,
        "digest": rec.digest.hex(),
        "roles": list(row.roles),
        "metrics": row.metrics,
        "mixed": len(rec.contributions),
        "rollout": history(records, args.seq),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"seq {row.seq} round {row.round} digest {out['digest'][:16]} roles {','.join(row.roles) or '-'}")
    for k, v in sorted(row.metrics.items()):
        print(f"  {k} = {v:.6g}")
    for h in out["rollout"]:
        print(f"  #{h['index']} {h['event']} round={h['round']}: {h['reason']}")
    return 0


def _manual(fn_name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from p2pfl.identity import load_key
        from p2pfl.rollout import offline

        identity = load_key(args.key)
        if fn_name == "promote":
            rec = offline.promote(Path(args.dir), identity, args.seq, args.reason)
        else:
            rec = offline.rollback(Path(args.dir), identity, args.to, args.reason)
        print(
            f"{rec.event} seq {rec.seq}: record #{rec.index} signed and appended; the peer serves it at start"
        )
        return 0

    return run


def add_parser(command: Callable[[str, str], argparse.ArgumentParser], formatter: Any) -> None:
    """Register ``p2pfl versions`` (called by p2pfl.cli.build_parser)."""
    p = command("versions", "list a peer's versions; promote or roll back the served version by hand")
    sub = p.add_subparsers(dest="versions_command", required=True, metavar="ACTION")

    def action(name: str, help: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        a = sub.add_parser(name, help=help, description=help, formatter_class=formatter)
        a.add_argument("dir", help="the peer's state directory")
        a.set_defaults(func=func)
        return a

    a = action("list", "the versions in the log with their quality and roles", _cmd_list)
    a.add_argument("--json", action="store_true", help="machine-readable output (default: a table)")
    a = action("show", "one version's record, metrics and rollout events", _cmd_show)
    a.add_argument("seq", type=int, help="the version number")
    a.add_argument("--json", action="store_true", help="machine-readable output (default: text)")
    for name, help in (
        ("promote", "serve version SEQ (a signed record; the peer must be stopped)"),
        ("rollback", "serve the previous serving version again (a signed record; the peer must be stopped)"),
    ):
        a = action(name, help, _manual(name))
        if name == "promote":
            a.add_argument("seq", type=int, help="the version to serve (its model must be kept)")
        else:
            a.add_argument("--to", type=int, help="the version to serve (default: the previous serving one)")
        a.add_argument("--key", required=True, help="the peer's key file (signs the record)")
        a.add_argument("--reason", default="operator", help="why, kept in the record")
