"""``p2pfl-bootstrap`` / ``python -m p2pfl.bootstrap``: run a registry, or query one with ``--health``.

Serving prints the registry's full multiaddr (with ``/p2p/<peer id>``) as the first line on stdout, then logs
to stderr (warnings only by default; ``--log-level info`` shows registrations and expiries). SIGINT and
SIGTERM close the host and exit 0. ``--health ADDR`` prints the status of a running registry as JSON and
exits 0, or prints why it could not and exits 1.

Arguments are checked before anything touches the disk (a bad ``--listen`` creates no key file). Failures are
one line on stderr with the exit codes of ``p2pfl`` (see ``p2pfl.cli``): 1 invalid input (a bad key file),
2 usage error, 3 the environment refused (address in use, unwritable key path), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import secrets
import signal
import sys
from collections.abc import Sequence
from typing import Any

import trio

from p2pfl.cli import EXIT_REJECTED, HelpFormatter, run_guarded, version
from p2pfl.config import check_multiaddr
from p2pfl.discovery import BootstrapClient, DiscoveryError
from p2pfl.errors import ConfigError, P2PFLError
from p2pfl.identity import Identity, load_or_create_key
from p2pfl.logs import PeerIdFilter, add_log_arguments, options_from_args, setup_logging

from .service import Registry, RegistryConfig, serve

log = logging.getLogger("bootstrap")


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    d = RegistryConfig()
    p = argparse.ArgumentParser(
        prog="p2pfl-bootstrap",
        description="p2pfl bootstrap registry: peers register per network id and discover each other.",
        epilog="exit codes: 0 success, 1 invalid input or unhealthy registry, 2 usage error, "
        "3 address in use or disk refused, 130 interrupted",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    p.add_argument(
        "--key",
        help="key file of the registry, created with mode 0600 if absent (default: none; required to serve)",
    )
    p.add_argument("--listen", default="/ip4/127.0.0.1/tcp/4001", help="multiaddr to listen on")
    p.add_argument("--max-networks", type=_positive(int), default=d.max_networks, help="network ids at most")
    p.add_argument(
        "--max-per-network", type=_positive(int), default=d.max_per_network, help="registrations per network"
    )
    p.add_argument("--max-total", type=_positive(int), default=d.max_total, help="registrations in total")
    p.add_argument("--max-per-peer", type=_positive(int), default=d.max_per_peer, help="networks per peer")
    p.add_argument(
        "--max-ttl", type=_positive(float), default=d.max_ttl, help="longest registration, seconds"
    )
    p.add_argument("--rate", type=_positive(float), default=d.rate_per_second, help="requests/s per peer")
    p.add_argument("--burst", type=_positive(float), default=d.burst, help="request burst per peer")
    p.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="log level",
    )
    add_log_arguments(p)
    p.add_argument(
        "--status-interval", type=float, default=0.0, help="log a status line every S seconds (0: never)"
    )
    # Test knobs: a shorter minimum ttl and sweep period make expiry testable in seconds.
    p.add_argument("--min-ttl", type=_positive(float), default=d.min_ttl, help=argparse.SUPPRESS)
    p.add_argument("--sweep-interval", type=_positive(float), default=1.0, help=argparse.SUPPRESS)
    p.add_argument(
        "--health",
        metavar="ADDR",
        help="query the registry at ADDR, print its status, exit 0/1 (default: serve instead)",
    )
    p.add_argument("--timeout", type=_positive(float), default=5.0, help="--health timeout in seconds")
    return p


def _setup_logging(args: argparse.Namespace, status: bool) -> PeerIdFilter:
    log_filter = setup_logging(options_from_args(args, args.log_level))
    if status:  # status lines were asked for explicitly: show them whatever the log level
        logging.getLogger("bootstrap.status").setLevel(logging.INFO)
    return log_filter


async def _health(addr: str, timeout: float) -> dict[str, Any]:
    from p2pfl.transport.libp2p import Libp2pTransport

    identity = Identity.generate()
    async with Libp2pTransport.open(
        seed=identity.seed, network_id=f"health-{secrets.token_hex(4)}", listen="/ip4/127.0.0.1/tcp/0"
    ) as transport:
        client = BootstrapClient(transport, identity, "health", [addr], timeout=timeout)
        with trio.fail_after(timeout):
            resp = await client.status(addr)
    status = resp.get("status")
    if not isinstance(status, dict):
        raise DiscoveryError("registry answered without a status map")
    return status


async def _serve(args: argparse.Namespace, config: RegistryConfig, log_filter: PeerIdFilter) -> None:
    from p2pfl.transport.libp2p import check_listen_port

    check_listen_port(args.listen)  # a port in use is refused before the key file is created
    identity, created = load_or_create_key(args.key)
    log_filter.peer_id = identity.peer_id
    if created:
        log.warning("event=key_created path=%s peer=%s", args.key, identity.peer_id)

    def ready(addr: str) -> None:
        print(addr, flush=True)

    registry = Registry(config)
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            await nursery.start(
                lambda task_status: serve(
                    identity,
                    args.listen,
                    registry,
                    ready=ready,
                    sweep_interval=args.sweep_interval,
                    status_interval=args.status_interval,
                    task_status=task_status,
                )
            )
            async for signum in signals:
                log.warning(
                    "event=shutdown signal=%s registrations=%d", signal.Signals(signum).name, registry.total
                )
                break
        nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (every expected failure is one line on stderr)."""
    return run_guarded(lambda: _main(argv), prefix="p2pfl-bootstrap")


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log_filter = _setup_logging(args, args.status_interval > 0)
    if args.health:
        try:
            status = trio.run(_health, args.health, args.timeout)
        except (P2PFLError, trio.TooSlowError, OSError) as exc:
            print(f"p2pfl-bootstrap: registry {args.health} is not healthy: {exc}", file=sys.stderr)
            return EXIT_REJECTED
        print(json.dumps(status, indent=1, sort_keys=True))
        return 0
    if not args.key:
        parser.error("--key is required to serve (or use --health ADDR)")
    try:  # before the key file is created
        check_multiaddr(args.listen, "--listen", with_peer_id=False)
    except ConfigError as exc:
        parser.error(str(exc))
    try:
        config = RegistryConfig(
            max_networks=args.max_networks,
            max_per_network=args.max_per_network,
            max_total=args.max_total,
            max_per_peer=args.max_per_peer,
            min_ttl=args.min_ttl,
            max_ttl=args.max_ttl,
            rate_per_second=args.rate,
            burst=args.burst,
        )
        config.validate()
    except ConfigError as exc:
        parser.error(str(exc))
    trio.run(_serve, args, config, log_filter)  # failures: one line and an exit code, from run_guarded
    return 0


if __name__ == "__main__":
    sys.exit(main())
