"""CPU shortcuts in two py-libp2p 0.8.1 hot paths, same results (a compat module: it touches internals).

Measured with ``P2PFL_SIM_PROFILE=sample`` on 32 peer processes (``benchmarks/bench_network.py --peers 32``,
docs/benchmarks.md "32 peers: where the CPU goes"): the work below grew with the degree and the number of
tasks, and each peer process paid it for every message it received.

* **The signed peer record of every RPC.** Gossipsub asks ``env_to_send_in_RPC(host)`` for the host's signed
  peer record on every ``publish``, including each *received* message it considers forwarding, and on every
  control RPC; the function re-derives the host's addresses each time (``get_addrs``: parse each listener's
  socket address into a multiaddr, base58-decode the peer id, encapsulate, compare sets) to decide whether
  its cached record is still current. With ``LeanGossipSub(peer_records=False)`` those records are stripped
  before sending anyway (all but the replay of recent messages to a new peer). For such hosts gossipsub's
  answer is now reused for :data:`PEER_RECORD_TTL_S`: gossipsub asks only once connections exist, after the
  transport listened, and listen addresses do not change while it runs, so the bytes are the same. Pubsub's
  own calls (the hello and subscription announcements, which keep their record) are left as they are.
* **Finding a task's parent.** py-libp2p's service manager records a parent for every task it spawns (one
  per received pubsub message and per subscription change) by walking its *whole* task tree looking for the
  current trio task (``TrioManager._find_parent_task``): O(tasks) per spawn, and a host has a few tasks per
  connection. Each managed task now registers itself while it runs, so the lookup is a dict access. Same
  answer: a task is in the tree exactly while it runs and is not done (see :func:`_find_parent_task`).
* **Forwarding a message nobody is forwarded.** Pubsub hands every received message to the router's
  ``publish`` to forward it. With relaying off (``LeanGossipSub(relay=False)``) another peer's message goes
  to nobody, yet the library still built the RPC with the signed record (above), its message id, and queued
  a copy for every connected peer not subscribed to the message's topic (on a 6-regular overlay: most of
  them), to send later if that peer subscribes (a relay, which ``relay=False`` rules out).
  :func:`keep_unrelayed` does what remains of it: the spam and equivocation checks (they feed gossipsub's
  peer scores) and the message cache (IWANT answers), then tells the topic's observers (GossipSub v1.3).
* **The sender's key of every signed message.** Pubsub's ``signature_validator`` re-derived the sender's
  public key from its peer id for each message (multihash decode, key deserialisation, the peer id
  recomputed from the key to compare): a pure function of the ``from`` bytes, now remembered for the last
  :data:`SENDER_KEYS` senders (:func:`_sender_key`). The signature itself is verified on every message as
  before; a message whose key is not in its peer id (``msg.key``: RSA) takes the library's path.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Callable
from typing import Any, Final

import libp2p.pubsub.gossipsub as gossipsub_module
import libp2p.pubsub.pubsub as pubsub_module
import trio
from libp2p.crypto.keys import PublicKey
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX
from libp2p.tools.anyio_service.trio_manager import TrioManager
from libp2p.tools.anyio_service.trio_tasks import FunctionTask

__all__ = [
    "PEER_RECORD_TTL_S",
    "SENDER_KEYS",
    "install",
    "keep_unrelayed",
    "original_find_parent_task",
    "original_signature_validator",
    "records_stripped",
    "signature_validator",
]

#: how long a host whose gossip RPCs carry no peer record reuses its signed record's bytes
PEER_RECORD_TTL_S: Final = 1.0

#: py-libp2p's own function, as gossipsub imported it
_env_to_send_in_rpc: Callable[[Any], tuple[bytes, bool]] = getattr(gossipsub_module, "env_to_send_in_RPC")  # noqa: B009
#: hosts whose gossipsub strips per-RPC records (LeanGossipSub(peer_records=False)), with their cached answer
_stripping: weakref.WeakKeyDictionary[Any, tuple[float, tuple[bytes, bool]] | None] = (
    weakref.WeakKeyDictionary()
)

_original_run_and_manage = TrioManager._run_and_manage_task
#: the library's tree walk (tests compare the two)
original_find_parent_task = TrioManager._find_parent_task
#: senders whose public key (derived from their peer id) is remembered
SENDER_KEYS: Final = 1024
#: py-libp2p's own message signature check, as pubsub imported it (tests compare the two)
original_signature_validator: Callable[[rpc_pb2.Message], bool] = pubsub_module.signature_validator  # type: ignore[attr-defined]
_SIGNING_PREFIX: Final = PUBSUB_SIGNING_PREFIX.encode()
#: attribute under which a manager keeps {trio task: the FunctionTask it runs}
_INDEX = "_p2pfl_running"


def records_stripped(host: Any) -> None:
    """``host``'s gossipsub strips the peer record from its RPCs: let it reuse the record for a while."""
    _stripping.setdefault(host, None)


def _env_to_send(host: Any) -> tuple[bytes, bool]:
    if host not in _stripping:
        return _env_to_send_in_rpc(host)
    now = time.monotonic()
    cached = _stripping.get(host)
    if cached is not None and now - cached[0] < PEER_RECORD_TTL_S:
        return cached[1][0], False
    answer = _env_to_send_in_rpc(host)
    _stripping[host] = (now, answer)
    return answer


async def _run_and_manage_task(self: TrioManager, task: Any) -> None:
    if not isinstance(task, FunctionTask):
        await _original_run_and_manage(self, task)
        return
    index: dict[trio.lowlevel.Task, FunctionTask] = self.__dict__.setdefault(_INDEX, {})
    me = trio.lowlevel.current_task()
    index[me] = task
    try:
        await _original_run_and_manage(self, task)
    finally:
        index.pop(me, None)


def _find_parent_task(self: TrioManager, trio_task: trio.lowlevel.Task) -> FunctionTask | None:
    """The running FunctionTask of this manager whose trio task is ``trio_task``, else None (a new root).

    The library's version walks the tree from the root tasks. A FunctionTask joins the tree when spawned and
    leaves it when its ``run`` ends (it sets ``done`` first, then leaves its parent; a root leaves right
    after); a non-daemon parent waits for its children, and a daemon parent's children are handed to the
    grandparent in the same synchronous step that ends it. So the task running in ``trio_task`` is in the
    tree exactly when it has started (``trio_task`` set) and is not done, which is what is checked here."""
    index: dict[trio.lowlevel.Task, FunctionTask] = self.__dict__.get(_INDEX, {})
    task = index.get(trio_task)
    if task is None or task.is_done or not task.has_trio_task or task.trio_task is not trio_task:
        return None
    return task


async def keep_unrelayed(router: Any, msg_forwarder: Any, msg: Any) -> None:
    """What gossipsub's ``publish`` does with another peer's message when it forwards it to nobody: the
    library's checks, cache and observer notice in its order, without the RPC, the records and the queues."""
    if not router._check_spam_protection(msg_forwarder, msg) or not router._check_equivocation(msg):
        return
    router.mcache.put(msg)
    if any(router.topic_observation.get_observers(topic) for topic in msg.topicIDs):
        await router._notify_observers(msg.topicIDs, router.pubsub.get_message_id(msg))


@functools.lru_cache(maxsize=SENDER_KEYS)
def _sender_key(from_id: bytes) -> PublicKey | None:
    """The public key in peer id ``from_id`` if it holds one and it hashes back to that id, else None."""
    sender = ID(from_id)
    key = sender.extract_public_key()  # (catches its own errors: None)
    if key is None or ID.from_pubkey(key) != sender:
        return None
    return key


def signature_validator(msg: rpc_pb2.Message) -> bool:
    """py-libp2p's ``signature_validator`` with the sender's key remembered (module docstring)."""
    if msg.signature == b"":
        return False
    key = _sender_key(bytes(msg.from_id))
    if key is None:  # a key carried in msg.key, or none that matches: the library decides
        return original_signature_validator(msg)
    signed = rpc_pb2.Message(data=msg.data, topicIDs=msg.topicIDs, from_id=msg.from_id, seqno=msg.seqno)
    try:
        return key.verify(_SIGNING_PREFIX + signed.SerializeToString(), msg.signature)
    except Exception:  # as the library: a malformed signature is a failed check
        return False


def install() -> None:
    """Install the shortcuts (process-wide; idempotent)."""
    setattr(gossipsub_module, "env_to_send_in_RPC", _env_to_send)  # noqa: B010 - not re-exported there
    setattr(pubsub_module, "signature_validator", signature_validator)  # noqa: B010
    TrioManager._run_and_manage_task = _run_and_manage_task  # type: ignore[method-assign]
    TrioManager._find_parent_task = _find_parent_task  # type: ignore[method-assign]
