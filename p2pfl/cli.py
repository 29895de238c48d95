"""The ``p2pfl`` command: ``keygen``, ``id``, ``inspect``, ``demo``.

Subcommands import what they need lazily so that ``p2pfl id`` answers instantly (no torch, no libp2p).
Exit codes: 0 success, 1 a rejected or invalid input (the reason is printed), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from p2pfl.errors import P2PFLError

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2


def _cmd_keygen(args: argparse.Namespace) -> int:
    from p2pfl.identity import Identity, save_key

    identity = Identity.generate()
    path = save_key(identity, args.out, force=args.force)
    print(identity.peer_id)
    print(f"wrote {path} (mode 0600)", file=sys.stderr)
    return EXIT_OK


def _cmd_id(args: argparse.Namespace) -> int:
    from p2pfl.identity import load_key

    print(load_key(args.key).peer_id)
    return EXIT_OK


def _summarise_tensors(payload: memoryview) -> list[dict[str, Any]]:
    import numpy as np

    from p2pfl.wire import decode_tensors

    out = []
    for name, arr in decode_tensors(payload).items():
        entry: dict[str, Any] = {"name": name, "dtype": str(arr.dtype), "shape": list(arr.shape)}
        if arr.size and arr.dtype.kind == "f":
            entry["l2_norm"] = float(np.linalg.norm(arr.astype(np.float64)))
        out.append(entry)
    return out


def _cmd_inspect(args: argparse.Namespace) -> int:
    from p2pfl.wire import Limits, WireError, open_envelope

    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_REJECTED
    report: dict[str, Any] = {"file": str(path), "size": len(data)}
    try:
        env = open_envelope(data, limits=Limits(), network_id=args.network, expected_sender=args.sender)
        tensors = _summarise_tensors(env.payload) if env.payload is not None else None
    except WireError as exc:
        report.update(valid=False, reason=exc.reason, error=str(exc))
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(f"REJECTED ({exc.reason}): {exc}")
        return EXIT_REJECTED
    h = env.header
    report.update(
        valid=True,
        kind=h.kind,
        network_id=h.network_id,
        sender=h.sender,
        seq=h.seq,
        base=h.base.hex(),
        result=h.result.hex(),
        arch=h.arch.hex(),
        payload_digest=h.payload_digest.hex(),
        payload_size=h.payload_size,
        payload_inline=env.payload is not None,
        codec=h.codec,
        meta=h.meta.to_wire(),
        timestamp_ms=h.timestamp_ms,
        signature=env.signature.hex(),
        tensors=tensors,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("VALID envelope: signature and payload digest verified")
        for key, value in report.items():
            if key not in ("valid", "tensors"):
                print(f"  {key:15} {value}")
        for t in tensors or []:
            norm = f"  |x|={t['l2_norm']:.6g}" if "l2_norm" in t else ""
            print(f"  tensor {t['name']:20} {t['dtype']:8} {t['shape']}{norm}")
        if tensors is None:
            print("  (payload not inline: it is fetched separately by its digest)")
    return EXIT_OK


def _cmd_sim(args: argparse.Namespace) -> int:
    import importlib

    try:  # imported by name: the simulations package sits above p2pfl and is optional
        runner = importlib.import_module("simulations.runner")
    except ImportError as exc:
        print(f"error: `p2pfl sim` needs the simulations package and the [sim] extra: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    code: int = runner.run_cli(args.scenario, Path(args.out), quiet=args.quiet)
    return code


def _cmd_demo(args: argparse.Namespace) -> int:
    from p2pfl.demo import run_demo

    return run_demo(Path(args.out) if args.out else None)


def _cmd_peer(args: argparse.Namespace) -> int:
    from p2pfl.node import run_node

    return run_node(args.config)


def _cmd_audit(args: argparse.Namespace) -> int:
    from p2pfl.state import read_log, verify_log

    report = verify_log(Path(args.dir), args.peer)
    if args.json:
        out: dict[str, Any] = {
            "ok": report.ok,
            "records": report.records,
            "peer_id": report.peer_id,
            "last_seq": report.last_seq,
            "problem": None
            if report.problem is None
            else {
                "index": report.problem.index,
                "kind": report.problem.kind,
                "reason": report.problem.reason,
            },
        }
        print(json.dumps(out, indent=2))
    elif report.ok:
        print(
            f"OK: {report.records} records, chain and signatures verify (peer {report.peer_id}, "
            f"last seq {report.last_seq})"
        )
        if args.verbose:
            for r in read_log(Path(args.dir)):
                print(
                    f"  #{r.index} {r.event:8} seq={r.seq} round={r.round} digest={r.digest.hex()[:16]} "
                    f"mixed={len(r.contributions)} metrics={r.metrics} {r.reason}"
                )
    else:
        p = report.problem
        assert p is not None
        print(f"BROKEN at record {p.index} ({p.kind}): {p.reason}; {report.records} records before it verify")
    return EXIT_OK if report.ok else EXIT_REJECTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="p2pfl", description="Peer-to-peer gossip learning over libp2p.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("keygen", help="create an Ed25519 key file and print its peer id")
    p.add_argument("--out", required=True, help="where to write the key file (mode 0600)")
    p.add_argument("--force", action="store_true", help="replace an existing key file")
    p.set_defaults(func=_cmd_keygen)

    p = sub.add_parser("id", help="print the peer id of a key file")
    p.add_argument("key", help="key file written by `p2pfl keygen`")
    p.set_defaults(func=_cmd_id)

    p = sub.add_parser("inspect", help="verify and print one envelope file")
    p.add_argument("file", help="envelope bytes, e.g. written by `p2pfl demo --out DIR`")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--network", help="also require this network id")
    p.add_argument("--sender", help="also require this sender peer id")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("peer", help="run a long-lived peer node")
    p.add_argument("--config", required=True, help="peer TOML file (see docs/peer.md)")
    p.set_defaults(func=_cmd_peer)

    p = sub.add_parser("audit", help="check a peer's signed, hash-chained version log")
    audit = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    v = audit.add_parser("verify", help="verify the chain and signatures; report the first broken record")
    v.add_argument("dir", help="the peer's state directory")
    v.add_argument("--peer", help="also require records to be signed by this peer id")
    v.add_argument("--json", action="store_true")
    v.add_argument("-v", "--verbose", action="store_true", help="list the records")
    v.set_defaults(func=_cmd_audit)

    p = sub.add_parser("demo", help="two identities exchange a signed delta; a tampered copy is rejected")
    p.add_argument("--out", help="directory to keep the keys and envelope files in (default: a temp dir)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("sim", help="run a local multi-peer simulation scenario and write a report")
    p.add_argument("scenario", help="scenario TOML, e.g. simulations/scenarios/default.toml")
    p.add_argument("--out", required=True, help="output directory (results.json, report.md, plots)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_sim)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except P2PFLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
