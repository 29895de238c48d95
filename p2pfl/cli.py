"""The ``p2pfl`` command: keygen, id, inspect, peer, audit, versions, roster, demo, sim.

Subcommands import what they need lazily so that ``p2pfl id`` answers instantly (no torch, no libp2p).
Every expected failure ends as one line ``error: <what>: <why>`` on stderr and one of these exit codes:

====  ==========================================================================================
0     success
1     invalid input: a rejected envelope, a broken or empty version log, a bad config, key or state file,
      an input file that cannot be read
2     usage error (bad arguments; argparse prints the usage)
3     the environment refused: disk full, read-only or unwritable path, address in use (an ``OSError``)
130   interrupted (Ctrl-C)
141   stdout was closed early (``p2pfl ... | head``): output stops quietly, as for SIGPIPE
      (``--help`` and ``--version`` exit 0 then: argparse ignores the closed pipe itself)
====  ==========================================================================================

A traceback means a bug: only unexpected exceptions are left to propagate.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from p2pfl.errors import P2PFLError
from p2pfl.logs import add_log_arguments

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
DISTRIBUTION = "p2pfl-gossip"


def version() -> str:
    """The installed distribution's version; the package's own when it is not installed (a source tree)."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        from p2pfl import __version__

        return __version__


def expected_failure(exc: BaseException) -> BaseException | None:
    """The failure to report in one line, or None when ``exc`` is a bug (left to show its traceback).

    trio wraps what fails inside a nursery in an ``ExceptionGroup``: a group is expected when every leaf is,
    and is reported by its first leaf.
    """
    if isinstance(exc, BaseExceptionGroup):
        leaves = [expected_failure(e) for e in exc.exceptions]
        if leaves and all(leaf is not None for leaf in leaves):
            return leaves[0]
        return None
    if isinstance(exc, (P2PFLError, OSError, KeyboardInterrupt)):
        return exc
    return None


def _caused_by_os(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(16):  # a cause chain is short; bounded all the same
        if seen is None:
            return False
        if isinstance(seen, OSError):
            return True
        seen = seen.__cause__
    return False


def exit_code(exc: BaseException) -> int:
    """The documented exit code of an expected failure (see the module docstring)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        return EXIT_BROKEN_PIPE
    if _caused_by_os(exc):
        return EXIT_ENVIRONMENT
    return EXIT_REJECTED


def describe(exc: BaseException) -> str:
    """One line naming the thing and the reason."""
    if isinstance(exc, OSError) and not isinstance(exc, P2PFLError):
        what = exc.filename if exc.filename is not None else None
        why = exc.strerror or str(exc) or type(exc).__name__
        return f"{what}: {why}" if what is not None else why
    return " ".join(str(exc).split()) or type(exc).__name__


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush does not fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def run_guarded(fn: Callable[[], int], prefix: str = "error") -> int:
    """Run a command; turn every expected failure into one line on stderr and its exit code.

    stdout is flushed inside the guard, so a reader that went away (``| head``) is noticed here, quietly.
    """
    try:
        code = fn()
        sys.stdout.flush()
    except BaseException as exc:
        failure = expected_failure(exc)
        if failure is None:
            raise
        if isinstance(failure, BrokenPipeError):
            _silence_stdout()
        elif not isinstance(failure, KeyboardInterrupt):
            with contextlib.suppress(OSError, ValueError):  # stderr closed too: the exit code still tells
                print(f"{prefix}: {describe(failure)}", file=sys.stderr, flush=True)
        return exit_code(failure)
    return code


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


def read_bounded(path: Path, limit: int) -> bytes | None:
    """The bytes of ``path``, or None when it holds more than ``limit`` bytes (never more than limit+1 read).

    Regular files are refused by their size before reading; pipes are read up to ``limit + 1`` bytes.
    Devices, directories and sockets are refused: they are not envelope files (``/dev/urandom`` never ends).
    """
    with open(path, "rb") as fh:  # opened first: the checks below are about what was opened
        mode = os.fstat(fh.fileno()).st_mode
        if stat.S_ISREG(mode):
            if os.fstat(fh.fileno()).st_size > limit:
                return None
        elif not stat.S_ISFIFO(mode):
            raise OSError(errno.EINVAL, "not a regular file or a pipe", str(path))
        data = fh.read(limit + 1)
    return None if len(data) > limit else data


def _cmd_inspect(args: argparse.Namespace) -> int:
    from p2pfl.wire import Limits, OversizeError, WireError, open_envelope

    path = Path(args.file)
    limits = Limits()
    try:
        data = read_bounded(path, limits.max_envelope)
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_REJECTED
    report: dict[str, Any] = {"file": str(path), "size": None if data is None else len(data)}
    try:
        if data is None:
            raise OversizeError(
                f"{path} holds more than the maximum envelope size of {limits.max_envelope} bytes"
            )
        env = open_envelope(data, limits=limits, network_id=args.network, expected_sender=args.sender)
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

    try:  # imported by name: p2pfl.sim needs the optional [sim] extra
        runner = importlib.import_module("p2pfl.sim.runner")
    except ImportError as exc:
        print(f"error: `p2pfl sim` needs the [sim] extra ('p2pfl-gossip[sim]'): {exc}", file=sys.stderr)
        return EXIT_REJECTED
    reproducible = args.reproducible
    code: int = runner.run_cli(args.scenario, Path(args.out), quiet=args.quiet, reproducible=reproducible)
    return code


def _cmd_demo(args: argparse.Namespace) -> int:
    from p2pfl.demo import run_demo

    return run_demo(Path(args.out) if args.out else None)


def _cmd_peer(args: argparse.Namespace) -> int:
    from p2pfl.logs import options_from_args
    from p2pfl.node import run_node

    return run_node(args.config, options_from_args(args, "info"))


def _peer_id(text: str) -> str:
    """argparse type: a peer id (``12D3KooW...``) whose public key can be recovered."""
    from p2pfl.identity import public_key_from_peer_id

    try:
        public_key_from_peer_id(text)
    except P2PFLError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _cmd_audit(args: argparse.Namespace) -> int:
    """Exit 0 only for a non-empty log that verifies: an empty log proves nothing, so it exits 1."""
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
    elif report.problem is not None and report.problem.kind == "empty":
        print(f"EMPTY: {Path(args.dir) / 'versions.log'} holds no records: nothing to verify")
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


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help, except where there is nothing to show (flags, unset)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2pfl",
        description="Peer-to-peer gossip learning over libp2p.",
        epilog="exit codes: 0 success, 1 invalid input, 2 usage error, 3 disk/network refused, "
        "130 interrupted, 141 output closed early",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)

    p = command("keygen", "create an Ed25519 key file and print its peer id")
    p.add_argument("--out", required=True, help="where to write the key file (mode 0600)")
    p.add_argument("--force", action="store_true", help="replace an existing key file (default: refuse)")
    p.set_defaults(func=_cmd_keygen)

    p = command("id", "print the peer id of a key file")
    p.add_argument("key", help="key file written by `p2pfl keygen`")
    p.set_defaults(func=_cmd_id)

    p = command("inspect", "verify and print one envelope file")
    p.add_argument(
        "file", help="envelope bytes (a regular file or a pipe), e.g. written by `p2pfl demo --out DIR`"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output (default: text)")
    p.add_argument("--network", help="also require this network id (default: any)")
    p.add_argument("--sender", help="also require this sender peer id (default: any)")
    p.set_defaults(func=_cmd_inspect)

    p = command("peer", "run a long-lived peer node")
    p.add_argument("--config", required=True, help="peer TOML file (see docs/peer.md)")
    add_log_arguments(p)
    p.set_defaults(func=_cmd_peer)

    p = command("audit", "check a peer's signed, hash-chained version log")
    audit = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    v = audit.add_parser(
        "verify",
        help="verify the chain and signatures; report the first broken record",
        description="Verify the chain and signatures of DIR/versions.log; exit 0 when it holds records and "
        "all verify, 1 when it is broken or empty.",
        formatter_class=HelpFormatter,
    )
    v.add_argument("dir", help="the peer's state directory")
    v.add_argument(
        "--peer",
        type=_peer_id,
        help="also require records to be signed by this peer id (default: the first's)",
    )
    v.add_argument("--json", action="store_true", help="machine-readable output (default: text)")
    v.add_argument("-v", "--verbose", action="store_true", help="list the records (default: a summary)")
    v.set_defaults(func=_cmd_audit)

    from p2pfl.cli_versions import add_parser as add_versions

    add_versions(command, HelpFormatter)

    p = command("demo", "two identities exchange a signed delta; a tampered copy is rejected")
    p.add_argument("--out", help="directory to keep the keys and envelope files in (default: a temp dir)")
    p.set_defaults(func=_cmd_demo)

    p = command("sim", "run a local multi-peer simulation scenario and write a report")
    p.add_argument("scenario", help="scenario TOML, e.g. simulations/scenarios/default.toml")
    p.add_argument("--out", required=True, help="output directory (results.json, report.md, plots)")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress output (default: a bar on a terminal, one line per round when redirected)",
    )
    p.add_argument(
        "--reproducible",
        action="store_true",
        help="the memory engine on a simulated clock with a seeded scheduler: the same scenario gives the "
        "same results (default: the scenario's engine on the real clock)",
    )
    p.set_defaults(func=_cmd_sim)

    from p2pfl.cli_roster import register as register_roster

    register_roster(sub, HelpFormatter)
    from p2pfl.cli_init import register as register_init

    register_init(sub, HelpFormatter)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring)."""
    parser = build_parser()

    def run() -> int:
        args = parser.parse_args(argv)  # inside the guard: `p2pfl --help | head -1` must not fail either
        return int(args.func(args))

    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())
