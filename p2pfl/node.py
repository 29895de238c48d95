"""``p2pfl peer --config FILE``: a long-running peer node process.

Prints one line ``peer <peer id> <multiaddr> ...`` on stdout once online (scripts read it), then logs status
lines to stderr. SIGINT/SIGTERM stop it cleanly after the current round: the checkpoint and the version log
are already written at that point, so a restart with the same config resumes where it stopped. A state write
that fails (disk full, read-only directory) stops the peer: ``p2pfl`` prints one ``error:`` line naming the
file, the reason and the persisted seq, and exits 3 (see ``p2pfl.cli``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal

import trio

from p2pfl.config import NodeConfig, load_config
from p2pfl.errors import ConfigError
from p2pfl.identity import load_key, load_or_create_key
from p2pfl.logs import LogOptions, PeerIdFilter, setup_logging
from p2pfl.peer import Peer
from p2pfl.roster.service import check_roster_file

log = logging.getLogger("p2pfl.node")


def _check_secagg_member(node: NodeConfig) -> None:
    """A group needs this peer among its members, so its key must exist already (a new key never is)."""
    members = node.peer.secagg.members
    if not os.path.exists(node.key_file):
        raise ConfigError(
            "secagg", "members", f"key file {node.key_file} does not exist yet: a new key is not a member"
        )
    peer_id = load_key(node.key_file).peer_id
    if peer_id not in members:
        raise ConfigError("secagg", "members", f"this peer ({peer_id}) is not among the members")


async def serve(node: NodeConfig, log_filter: PeerIdFilter | None = None) -> int:
    if node.peer.secagg.enabled:  # before anything starts: a group without this peer cannot run
        _check_secagg_member(node)
    learner = node.build_learner()  # first: a bad [learner.params] is refused before anything is written
    if node.peer.roster is not None:  # and a missing, foreign or unsigned roster
        check_roster_file(node.peer.roster, node.peer.network_id)
    identity, created = load_or_create_key(node.key_file)
    if log_filter is not None:
        log_filter.peer_id = identity.peer_id  # every line from here on carries it
    if created:
        log.info("created key file %s", node.key_file)
    async with Peer(node.peer, learner, identity) as peer:
        print("peer", peer.peer_id, *peer.listen_addrs, flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def on_signal() -> None:
                    async for sig in signals:
                        log.info("received %s: stopping after the current round", signal.Signals(sig).name)
                        peer.stop()
                        return

                nursery.start_soon(on_signal)
                await peer.run(node.rounds)
                if node.rounds is not None:
                    log.info("completed %d rounds; serving neighbours until stopped", node.rounds)
                    await peer.serve()  # still forgetting idle identities (p2pfl.peer_serve)
                nursery.cancel_scope.cancel()
    return 0


def run_node(config_path: str, log_options: LogOptions | None = None) -> int:
    """Run the peer of ``config_path``; ``log_options`` (the ``--log-*`` flags) say where and how it logs,
    at the config's ``log_level``."""
    node = load_config(config_path)
    log_filter = setup_logging(dataclasses.replace(log_options or LogOptions(), level=node.log_level))
    return trio.run(serve, node, log_filter)
