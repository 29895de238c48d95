"""``p2pfl init``: write a peer config for a real deployment, with differential privacy on.

The generated ``peer.toml`` joins a closed network (``[access] roster``), keeps its state, and trains with
record-level DP-SGD under a stated budget (``[privacy]``: epsilon at delta over the planned rounds; see
docs/privacy.md), because what a production peer publishes leaves its organisation. A simulation or a
test turns DP off; a config can too (``mode = "off"``), but only by saying so. The text is parsed by the
same loader as ``p2pfl peer`` before it is written, so a generated config always loads.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import Any

from p2pfl.config.loader import parse_config
from p2pfl.errors import ConfigError, StateError
from p2pfl.fsutil import atomic_write

TEMPLATE = """\
# p2pfl peer config written by `p2pfl init` (docs/peer.md explains every key)
[peer]
network_id = "{network}"
key_file = "{key}"
state_dir = "{state}"
listen = "/ip4/0.0.0.0/tcp/4101"
# advertise = ["/ip4/<public address>/tcp/4101"]
static_peers = []
bootstrap = []
rounds = {rounds}

[learner]
# module:function returning a p2pfl Learner over this organisation's private data
entry = "{entry}"

[access]
# the network's signed roster (p2pfl roster init/add/sign, docs/membership.md)
roster = "{roster}"

# Differential privacy (docs/privacy.md): each training record's influence on everything this peer
# publishes is bounded by DP-SGD; the noise is calibrated so that {rounds} published rounds spend exactly
# epsilon = {epsilon} at delta = {delta}. After that the peer stops publishing and keeps learning from its
# neighbours. mode = "peer" protects the whole data set of this peer instead of one record.
[privacy]
mode = "record"
epsilon = {epsilon}
delta = {delta}
rounds = {rounds}
clip_norm = {clip}
"""


def render(args: argparse.Namespace) -> str:
    return TEMPLATE.format(
        network=args.network,
        key=args.key,
        state=args.state_dir,
        rounds=args.rounds,
        entry=args.entry,
        roster=args.roster,
        epsilon=float(args.epsilon),
        delta=args.delta,
        clip=float(args.clip_norm),
    )


def _cmd_init(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        raise ConfigError(f"init: {out} exists; --force replaces it")
    text = render(args)
    data: dict[str, Any] = tomllib.loads(text)
    parse_config(data, out.resolve().parent, out)  # a generated config must load: its errors name the key
    try:
        atomic_write(out, text.encode())
    except OSError as exc:
        raise StateError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"wrote {out}: record-level DP, epsilon={float(args.epsilon)} delta={args.delta} "
          f"over {args.rounds} rounds", file=sys.stderr)  # fmt: skip
    return 0


def register(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """Add ``p2pfl init`` to the ``p2pfl`` parser's subcommands."""
    p = sub.add_parser(
        "init",
        help="write a peer config for a real deployment (closed network, DP on)",
        description="Write a peer TOML with differential privacy on and a stated budget (docs/privacy.md).",
        formatter_class=formatter,
    )
    p.add_argument("--out", required=True, help="where to write the config")
    p.add_argument("--network", required=True, help="the network id")
    p.add_argument("--key", default="node.key", help="the key file the config names (default: node.key)")
    p.add_argument("--roster", default="roster.bin", help="the roster file (default: roster.bin)")
    p.add_argument("--state-dir", default="state", help="the state directory (default: state)")
    p.add_argument(
        "--entry", default="p2pfl.sim.entry:digits", help="the learner entry (default: the digits demo)"
    )
    p.add_argument("--epsilon", type=float, default=3.0, help="the privacy budget (default: 3.0)")
    p.add_argument("--delta", type=float, default=1e-5, help="delta of the budget (default: 1e-05)")
    p.add_argument("--rounds", type=int, default=100, help="rounds the budget lasts (default: 100)")
    p.add_argument("--clip-norm", type=float, default=1.0, help="DP-SGD clipping norm (default: 1.0)")
    p.add_argument("--force", action="store_true", help="replace an existing file (default: refuse)")
    p.set_defaults(func=_cmd_init)
