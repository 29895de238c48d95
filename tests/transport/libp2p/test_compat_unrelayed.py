"""compat_cpu.keep_unrelayed: with relaying off, another peer's message gets what py-libp2p's own ``publish``
gives it (no RPC to anyone, the same message cache, spam counts, equivocation record and observer IHAVEs)
except the copies the library queued for peers not subscribed to its topic, which ``relay=False`` rules out.
Our own messages still take the library's path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2

from p2pfl.transport.libp2p import compat
from p2pfl.transport.libp2p.gossip import make_gossipsub
from tests.transport.libp2p.test_transport import FAST


def _pid(seed: int) -> ID:
    return ID.from_pubkey(create_new_key_pair(bytes([seed]) * 32).public_key)


ME, ORIGIN, SUBSCRIBER, STRANGER, OBSERVER = (_pid(i) for i in range(1, 6))


@dataclass
class _Pubsub:
    """What gossipsub's ``publish`` reads of its pubsub: every peer connected, ORIGIN and SUBSCRIBER
    subscribed to ORIGIN's topic, STRANGER to none."""

    my_id: ID = ME
    peers: dict[ID, object] = field(
        default_factory=lambda: dict.fromkeys([ORIGIN, SUBSCRIBER, STRANGER, OBSERVER])
    )
    peer_topics: dict[str, set[ID]] = field(
        default_factory=lambda: {"t-origin": {ORIGIN, SUBSCRIBER}, "t-me": {SUBSCRIBER}}
    )

    def get_message_id(self, msg: rpc_pb2.Message) -> bytes:
        return bytes(msg.from_id) + bytes(msg.seqno)


def _router() -> tuple[compat.LeanGossipSub, list[tuple[ID, rpc_pb2.RPC]]]:
    router = make_gossipsub(FAST)
    assert not router.relay  # the default this shortcut is for
    router.pubsub = _Pubsub()  # type: ignore[assignment]
    for peer in (ORIGIN, SUBSCRIBER, STRANGER, OBSERVER):
        router.peer_protocol[peer] = router.protocols[0]
    router.topic_observation.add_observer("t-origin", OBSERVER)
    sent: list[tuple[ID, rpc_pb2.RPC]] = []

    def send_rpc(peer_id: ID, rpc: rpc_pb2.RPC, priority: bool = False) -> None:
        sent.append((peer_id, rpc))

    router.send_rpc = send_rpc  # type: ignore[method-assign]
    return router, sent


def _msg(origin: ID, topic: str, seqno: int, data: bytes) -> rpc_pb2.Message:
    return rpc_pb2.Message(
        from_id=origin.to_bytes(), seqno=seqno.to_bytes(8, "big"), data=data, topicIDs=[topic]
    )


def _state(router: GossipSub) -> dict[str, Any]:
    return {
        "cached": sorted(router.mcache.msgs),
        "equivocation": sorted(router.equivocation_detection),
        "rates": {str(p): {t: len(v) for t, v in d.items()} for p, d in router.message_rate_limits.items()},
    }


async def _both(msgs: list[rpc_pb2.Message]) -> tuple[Any, Any]:
    """Each message published by a LeanGossipSub (ours) and by py-libp2p's own GossipSub.publish on a router
    in the same state (the library's)."""
    ours, ours_sent = _router()
    library, library_sent = _router()
    for msg in msgs:
        await ours.publish(ORIGIN, msg)
        await GossipSub.publish(library, ORIGIN, msg)
    return (ours, ours_sent), (library, library_sent)


async def test_another_peers_message_gets_the_librarys_cache_checks_and_observer_notice() -> None:
    msgs = [_msg(ORIGIN, "t-origin", i, b"v%d" % i) for i in range(3)]
    msgs.append(_msg(ORIGIN, "t-origin", 1, b"a different v1"))  # equivocation: not cached
    (ours, ours_sent), (library, library_sent) = await _both(msgs)
    assert _state(ours) == _state(library)
    assert len(_state(ours)["cached"]) == 3 and _state(ours)["rates"][str(ORIGIN)] == {"t-origin": 4}
    # the only RPCs either sends are the IHAVEs to the topic's observer, the same ones
    assert [(p, r.SerializeToString()) for p, r in ours_sent] == [
        (p, r.SerializeToString()) for p, r in library_sent
    ]
    assert {p for p, _ in ours_sent} == {OBSERVER} and len(ours_sent) == 3
    # the library queued a copy for the peers not subscribed to the topic; relay=False forwards nothing
    assert {STRANGER, OBSERVER} <= set(library._pending_messages)
    assert not ours._pending_messages


async def test_over_the_spam_limit_neither_caches_it() -> None:
    limit = int(FAST.spam_limit_per_second)
    msgs = [_msg(ORIGIN, "t-origin", i, b"m") for i in range(limit + 3)]
    (ours, _), (library, _) = await _both(msgs)
    assert _state(ours) == _state(library)
    assert len(_state(ours)["cached"]) == limit


async def test_our_own_message_takes_the_librarys_path() -> None:
    ours, sent = _router()
    await ours.publish(ME, _msg(ME, "t-me", 1, b"mine"))
    assert [p for p, _ in sent] == [SUBSCRIBER]  # every subscriber of our topic, directly
    assert STRANGER in ours._pending_messages  # the library's queue for a peer that may subscribe later
