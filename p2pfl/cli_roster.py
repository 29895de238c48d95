"""``p2pfl roster init | add | revoke | sign | show | verify | certify``: an operator's roster tools.

The roster file holds the canonical encoding of one roster (docs/membership.md). ``add`` and ``revoke`` edit
it and leave it unsigned; ``sign`` bumps the version, sets the expiry and signs it with the operator key,
and only a signed file is accepted by peers. Exit codes are the ``p2pfl`` command's (:mod:`p2pfl.cli`):
0 ok, 1 invalid input (a bad roster, key or argument value; ``verify``: the roster does not verify),
2 usage, 3 the disk refused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from p2pfl.roster import Roster

DAY_MS = 24 * 3600 * 1000


def _now_ms() -> int:
    return int(time.time() * 1000)


def _public_key(text: str) -> bytes:
    """An org's public key: 64 hex digits or its Ed25519 peer-id form (what ``p2pfl id org.key`` prints)."""
    from p2pfl.identity import public_key_from_peer_id
    from p2pfl.roster import RosterError

    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        return public_key_from_peer_id(text)
    except Exception:
        raise RosterError(
            "invalid", f"{text!r} is neither 64 hex digits nor an Ed25519 id (`p2pfl id ORG_KEY`)"
        ) from None


def _share(text: str) -> int:
    from p2pfl.roster import RosterError
    from p2pfl.roster.model import PPM

    try:
        share = float(text)
    except ValueError:
        share = float("nan")
    if not 0 < share <= 1:
        raise RosterError("invalid", f"--max-share must be in (0, 1], got {text!r}")
    return max(1, round(share * PPM))


def _cmd_init(args: argparse.Namespace) -> int:
    from p2pfl.identity import load_or_create_key
    from p2pfl.roster import Roster, RosterError, save_roster

    out = Path(args.out)
    if out.exists() and not args.force:
        raise RosterError("exists", f"roster file {out} already exists; refusing to overwrite it (--force)")
    operator, created = load_or_create_key(args.key)
    roster = Roster(network_id=args.network, operator=operator.public_key)
    save_roster(out, roster)
    print(operator.public_key.hex())
    how = "created" if created else "using existing"
    print(f"{how} operator key {args.key}; wrote an empty, unsigned roster to {out}", file=sys.stderr)
    return 0


def _cmd_add(args: argparse.Namespace) -> int:
    from p2pfl.roster import Member, Org, RosterError, load_roster, roles_of, save_roster

    roster = load_roster(args.roster)
    if args.kind == "org":
        if args.public_key is None:
            raise RosterError("invalid", "adding an org needs --public-key")
        old = roster.org(args.name)
        org = Org(
            args.name,
            _public_key(args.public_key),
            _share(args.max_share) if args.max_share is not None else (old.max_share_ppm if old else 10**6),
            args.max_nodes if args.max_nodes is not None else (old.max_nodes if old else 10_000),
        )
        roster = roster.with_org(org)
    else:
        if args.org is None:
            raise RosterError("invalid", "adding a member needs --org")
        if roster.org(args.org) is None:
            raise RosterError("unknown_org", f"the roster lists no org {args.org!r}: add it first")
        roster = roster.with_member(Member(args.name, args.org, roles_of(args.role)))
    save_roster(args.roster, roster)
    print(f"added {args.kind} {args.name}; the roster is unsigned until `p2pfl roster sign`", file=sys.stderr)
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    from p2pfl.roster import load_roster, save_roster

    roster = load_roster(args.roster)
    roster = roster.revoke_org(args.name) if args.kind == "org" else roster.revoke_member(args.name)
    save_roster(args.roster, roster)
    print(f"revoked {args.kind} {args.name}; sign the roster to publish it", file=sys.stderr)
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    from p2pfl.identity import load_key
    from p2pfl.roster import RosterError, load_roster, save_roster, sign, verify

    roster = load_roster(args.roster)
    version = roster.version + 1 if args.version is None else args.version
    if version <= roster.version and roster.signature:
        raise RosterError(
            "stale_version", f"--version {version} is not above the signed version {roster.version}"
        )
    if args.days is not None and not 0 < args.days <= 3650:
        raise RosterError("invalid", f"--days must be in (0, 3650], got {args.days}")
    expires = _now_ms() + round((30 if args.days is None else args.days) * DAY_MS)
    signed = sign(roster, load_key(args.key), version=version, expires_ms=expires)
    verify(signed, network_id=None, now_ms=_now_ms())
    save_roster(args.roster, signed)
    print(f"signed version {version} of network {signed.network_id}, expires {_iso(expires)}")
    return 0


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _status(roster: Roster, now: int) -> tuple[str, str | None]:
    from p2pfl.roster import RosterError, verify

    try:
        verify(roster, network_id=None, now_ms=now)
    except RosterError as exc:
        return exc.reason, str(exc)
    return "valid", None


def _as_json(roster: Roster, state: str) -> dict[str, Any]:
    return {
        "network_id": roster.network_id,
        "version": roster.version,
        "expires_ms": roster.expires_ms,
        "operator": roster.operator.hex(),
        "status": state,
        "orgs": [
            {
                "name": o.name,
                "public_key": o.public_key.hex(),
                "max_share": o.max_share,
                "max_nodes": o.max_nodes,
            }
            for o in roster.orgs
        ],
        "members": [{"peer_id": m.peer_id, "org": m.org, "roles": list(m.roles)} for m in roster.members],
        "revoked": list(roster.revoked),
    }


def _cmd_show(args: argparse.Namespace) -> int:
    from p2pfl.roster import load_roster

    roster = load_roster(args.roster)
    state, _ = _status(roster, _now_ms())
    if args.json:
        print(json.dumps(_as_json(roster, state), indent=2))
        return 0
    expiry = _iso(roster.expires_ms) if roster.expires_ms else "-"
    print(f"network  {roster.network_id}")
    print(f"version  {roster.version}  ({state}; expires {expiry})")
    print(f"operator {roster.operator.hex()}")
    print(f"orgs     {len(roster.orgs)}")
    for o in roster.orgs:
        print(f"  {o.name:20} max_share={o.max_share:g} max_nodes={o.max_nodes} key={o.public_key.hex()}")
    print(f"members  {len(roster.members)}")
    for m in roster.members:
        print(f"  {m.peer_id} {m.org}{' ' + ','.join(m.roles) if m.roles else ''}")
    print(f"revoked  {len(roster.revoked)}")
    for pid in roster.revoked:
        print(f"  {pid}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from p2pfl.roster import RosterError, load_roster, verify

    roster = load_roster(args.roster)
    operator = _public_key(args.operator) if args.operator else None
    try:
        verify(roster, network_id=args.network, now_ms=_now_ms(), operator=operator)
    except RosterError as exc:
        print(f"INVALID ({exc.reason}): {exc}")
        return 1
    print(
        f"VALID roster of network {roster.network_id}, version {roster.version}, "
        f"{len(roster.orgs)} orgs, {len(roster.members)} members, expires {_iso(roster.expires_ms)}"
    )
    return 0


def _cmd_certify(args: argparse.Namespace) -> int:
    from p2pfl.identity import load_key
    from p2pfl.roster import Certificate, RosterError, certify, roles_of, save_certificate
    from p2pfl.roster.model import check_peer_id

    check_peer_id(args.peer)
    if not 0 < args.days <= 3650:
        raise RosterError("invalid", f"--days must be in (0, 3650], got {args.days}")
    cert = Certificate(
        network_id=args.network,
        org=args.org,
        peer_id=args.peer,
        roles=roles_of(args.role),
        expires_ms=_now_ms() + round(args.days * DAY_MS),
    )
    save_certificate(args.out, certify(cert, load_key(args.key)))
    print(f"wrote certificate of {args.peer} under org {args.org} to {args.out}", file=sys.stderr)
    return 0


def register(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """Add ``p2pfl roster ...`` to the ``p2pfl`` parser's subcommands."""
    p = sub.add_parser(
        "roster",
        help="create, edit, sign and check a closed network's roster",
        description="Membership of a closed network (docs/membership.md). Exit codes: 0 ok, 1 invalid "
        "input or a roster that does not verify, 2 usage, 3 the disk refused.",
        formatter_class=formatter,
    )
    actions = p.add_subparsers(dest="roster_command", required=True, metavar="ACTION")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name, help=help, description=help, formatter_class=formatter
        )
        return parser

    a = action("init", "create the operator key (unless it exists) and an empty roster for a network")
    a.add_argument("--network", required=True, help="the network id the roster is for")
    a.add_argument("--key", required=True, help="the operator key file (created with mode 0600 if absent)")
    a.add_argument("--out", required=True, help="where to write the roster file")
    a.add_argument("--force", action="store_true", help="replace an existing roster file (default: refuse)")
    a.set_defaults(func=_cmd_init)

    a = action("add", "add (or update) an org or a member; leaves the roster unsigned")
    a.add_argument("roster", help="the roster file")
    a.add_argument("kind", choices=("org", "member"))
    a.add_argument("name", help="the org's name, or the member's peer id")
    a.add_argument(
        "--public-key",
        help="org: its public key (hex, or `p2pfl id ORG_KEY`'s output; default: required for an org)",
    )
    a.add_argument(
        "--max-share",
        help="org: the most its nodes may weigh in any peer's mix, in (0, 1] (default: 1, or unchanged)",
    )
    a.add_argument(
        "--max-nodes",
        type=int,
        help="org: the most nodes it may have, listed + certified (default: 10000, or unchanged)",
    )
    a.add_argument("--org", help="member: the org it belongs to (default: required for a member)")
    a.add_argument("--role", action="append", default=[], help="member: a role (repeatable)")
    a.set_defaults(func=_cmd_add)

    a = action("revoke", "remove a member (listed as revoked) or an org (with its members)")
    a.add_argument("roster", help="the roster file")
    a.add_argument("kind", choices=("org", "member"))
    a.add_argument("name", help="the org's name, or the member's peer id")
    a.set_defaults(func=_cmd_revoke)

    a = action("sign", "bump the version, set the expiry and sign with the operator key")
    a.add_argument("roster", help="the roster file")
    a.add_argument("--key", required=True, help="the operator key file")
    a.add_argument("--days", type=float, help="valid for this many days (default: 30)")
    a.add_argument("--version", type=int, help="the new version (default: the current one + 1)")
    a.set_defaults(func=_cmd_sign)

    a = action("show", "print a roster readably")
    a.add_argument("roster", help="the roster file")
    a.add_argument("--json", action="store_true", help="machine-readable output (default: text)")
    a.set_defaults(func=_cmd_show)

    a = action("verify", "check a roster's signature and expiry (exit 0 valid, 1 not)")
    a.add_argument("roster", help="the roster file")
    a.add_argument("--network", help="also require this network id (default: any)")
    a.add_argument(
        "--operator", help="also require this operator public key, hex (default: the roster's own)"
    )
    a.set_defaults(func=_cmd_verify)

    a = action("certify", "issue a member certificate signed by an org key")
    a.add_argument("--key", required=True, help="the org's key file")
    a.add_argument("--org", required=True, help="the org's name in the roster")
    a.add_argument("--network", required=True, help="the network id")
    a.add_argument("--peer", required=True, help="the member's peer id")
    a.add_argument("--role", action="append", default=[], help="a role (repeatable)")
    a.add_argument("--days", type=float, default=30.0, help="valid for this many days")
    a.add_argument("--out", required=True, help="where to write the certificate")
    a.set_defaults(func=_cmd_certify)
