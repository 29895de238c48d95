"""Remote-crash regression: a real ``p2pfl peer`` process fetches snapshots and deltas from a malicious
neighbour, survives every class of bad response, counts each, and keeps learning with its honest neighbours.

Before issue 13 the first of these (a snapshot at join whose header map mixes a bytes key with an unknown
string key) ended the peer process with exit 1.

The malicious neighbour is an in-test libp2p host (a :class:`Libp2pTransport` run by trio in a thread) whose
snapshot and delta protocols are raw stream handlers, so it can break the framing too. It is dialled by the
peer under test (peer 0, ``min_neighbours = 3``: it joins only once the malicious host is connected). Then:

* snapshots (``/p2pfl/snapshot/1``): the join's fetch gets trigger (a) (crafted envelope); each later request,
  provoked by a valid delta announcement with a version gap, gets the next class: a signed tensor of shape
  ``[0, 2**63]``, a truncated frame, an oversize length prefix, a garbage status byte, a stall past the peer's
  ``request_timeout_s``, and finally a good snapshot (a copy of peer 0's own model, so the host is a replica);
* deltas (``/p2pfl/delta/1``): announcements of version 1 without payload; each fetch gets the next class:
  a payload with a ``[0, 2**63]`` tensor (matching its signed digest), bytes that do not match the digest, a
  truncated frame, an oversize length prefix, a garbage status byte, a stall.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol

from p2pfl.identity import Identity
from p2pfl.protocol import DELTA_PROTOCOL, SNAPSHOT_PROTOCOL, Layout
from p2pfl.transport.libp2p import Libp2pTransport
from p2pfl.wire import decode_tensors, digest, encode_tensors, model_digest, open_envelope
from tests.hostile_bytes import bytes_key_envelope, header_for, huge_shape_payload, signed
from tests.network.cluster import Cluster

pytestmark = pytest.mark.slow

MALICIOUS = Identity(bytes([0xEC]) * 32)
REQUEST_TIMEOUT_S = 3.0
SNAPSHOT_PLAN = ["crafted", "shape", "truncated", "oversize", "status", "stall", "good"]
DELTA_PLAN = ["shape", "digest", "truncated", "oversize", "status", "stall"]
#: status.json "rejected" reasons each transport-level class must show up under at peer 0
TRANSPORT_REASONS = {
    ("snapshot", "truncated"): "snapshot_bad_response",
    ("snapshot", "status"): "snapshot_bad_response",
    ("snapshot", "oversize"): "snapshot_oversize",
    ("snapshot", "stall"): "snapshot_timeout",
    ("delta", "digest"): "digest_mismatch",
    ("delta", "truncated"): "bad_response",
    ("delta", "status"): "bad_response",
    ("delta", "oversize"): "oversize",
    ("delta", "stall"): "timeout",
}


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(8, "big") + body


class Malicious:
    """The malicious neighbour; ``run`` is its trio main (in a thread). Every wait in it is bounded."""

    def __init__(self, victim: str) -> None:
        self.victim = victim  # peer id of the peer under test
        self.addr = ""
        self.ready = threading.Event()
        self.done = threading.Event()
        self.snapshot_plan = list(SNAPSHOT_PLAN)
        self.delta_plan = list(DELTA_PLAN)
        self.served: list[tuple[str, str]] = []
        self.problems: list[str] = []
        self.layout: Layout | None = None
        self.values: dict[str, Any] = {}
        self.delta_payloads: dict[str, bytes] = {}

    # ----------------------------------------------------------------------------------- responses
    async def _respond(self, stream: INetStream, protocol: str, what: str, body: bytes) -> None:
        self.served.append((protocol, what))
        if what == "truncated":
            # the right length for status byte + body (within the requester's cap), then EOF after 100 bytes
            await stream.write((len(body) + 1).to_bytes(8, "big") + b"\x00" + body[:99])
        elif what == "oversize":
            await stream.write((1 << 40).to_bytes(8, "big"))
        elif what == "status":
            await stream.write(_frame(b"\x07" + body))
        elif what == "stall":
            await trio.sleep(REQUEST_TIMEOUT_S + 2)
        else:
            await stream.write(_frame(b"\x00" + body))
        await stream.close()

    async def _read_request(self, stream: INetStream) -> bytes:
        with trio.fail_after(10):
            head = b""
            while len(head) < 8:
                head += await stream.read(8 - len(head))
            size = int.from_bytes(head, "big")
            body = b""
            while len(body) < size:
                body += await stream.read(size - len(body))
            return body

    async def serve_snapshot(self, stream: INetStream) -> None:
        try:
            await self._read_request(stream)
            what = self.snapshot_plan.pop(0) if self.snapshot_plan else "good"
            assert self.layout is not None or what == "crafted"
            if what == "crafted":
                body = bytes_key_envelope(MALICIOUS, "digits")
            elif what == "shape":
                assert self.layout is not None
                payload = huge_shape_payload()
                header = header_for(
                    MALICIOUS, "digits", payload, kind="snapshot", seq=0, arch=self.layout.arch
                )
                body = signed(MALICIOUS, header, payload)
            else:
                body = self.good_snapshot()
            await self._respond(stream, "snapshot", what, body)
        except Exception as exc:  # the test reports it; never let it pass silently
            self.problems.append(f"snapshot handler: {type(exc).__name__}: {exc}")

    async def serve_delta(self, stream: INetStream) -> None:
        try:
            request = await self._read_request(stream)
            what = self.delta_plan.pop(0) if self.delta_plan else "stall"
            body = self.delta_payloads.get(what, self.delta_payloads["zero"])
            if what == "digest":
                body = bytes(b ^ 0xFF for b in body)  # same size, not the signed digest
            del request
            await self._respond(stream, "delta", what, body)
        except Exception as exc:
            self.problems.append(f"delta handler: {type(exc).__name__}: {exc}")

    def good_snapshot(self) -> bytes:
        assert self.layout is not None
        payload = encode_tensors(self.values)
        header = header_for(
            MALICIOUS,
            "digits",
            payload,
            kind="snapshot",
            seq=0,
            arch=self.layout.arch,
            result=model_digest(self.values),
        )
        return signed(MALICIOUS, header, payload)

    def announcement(self, seq: int, base: bytes, payload: bytes, *, inline: bool) -> bytes:
        assert self.layout is not None
        header = header_for(
            MALICIOUS, "digits", payload, seq=seq, base=base, arch=self.layout.arch, result=base
        )
        return signed(MALICIOUS, header, payload, inline=inline)

    # ---------------------------------------------------------------------------------------- main
    async def main(self, deadline_s: float) -> None:
        try:
            with trio.move_on_after(deadline_s):
                async with Libp2pTransport.open(
                    seed=MALICIOUS.seed, network_id="digits", listen="/ip4/127.0.0.1/tcp/0"
                ) as t:
                    t.host.set_stream_handler(TProtocol(SNAPSHOT_PROTOCOL), self.serve_snapshot)
                    t.host.set_stream_handler(TProtocol(DELTA_PROTOCOL), self.serve_delta)
                    self.addr = t.listen_addrs[0]
                    self.ready.set()
                    await self.attack(t)
        except Exception as exc:  # e.g. the victim died: reported by the test
            self.problems.append(f"attack stopped: {type(exc).__name__}: {exc}")
        finally:
            self.done.set()

    async def wait(self, check: Any, seconds: float, what: str, *, required: bool = True) -> bool:
        with trio.move_on_after(seconds):
            while not check():
                await trio.sleep(0.05)
            return True
        if required:
            self.problems.append(f"timed out waiting for {what}")
        return False

    async def attack(self, t: Libp2pTransport) -> None:
        if not await self.wait(lambda: self.victim in t.connected_peers(), 90, "the victim to dial us"):
            return
        # our "model": a copy of the victim's own public model (a free rider that scores well)
        data = await t.request(self.victim, SNAPSHOT_PROTOCOL, b"", max_response=1 << 24, timeout=30)
        env = open_envelope(data, network_id="digits", expected_sender=self.victim)
        assert env.payload is not None
        self.values = {k: np.array(v, np.float32) for k, v in decode_tensors(env.payload).items()}
        self.layout = Layout.of(self.values)
        zero = encode_tensors({k: np.zeros_like(v) for k, v in self.values.items()})
        self.delta_payloads = {"zero": zero, "shape": huge_shape_payload(len(zero))}
        await trio.sleep(2.0)  # the victim subscribes to our topic
        # snapshots: a valid delta with a version gap makes the victim ask for one (every 5 s at most)
        seq = 100
        while self.snapshot_plan and seq < 130:
            if self.victim not in t.connected_peers():
                self.problems.append("the victim disconnected (crashed?)")
                return
            seq += 1
            await t.broadcast(self.announcement(seq, digest(b"gap %d" % seq), zero, inline=True))
            before = len(self.snapshot_plan)
            # (not required: a request may be held back by the victim's retry interval; announce again)
            await self.wait(lambda b=before: len(self.snapshot_plan) < b, 8, "", required=False)
        if not await self.wait(lambda: ("snapshot", "good") in self.served, 10, "the good snapshot"):
            return
        await trio.sleep(1.0)
        # deltas: version 1 announced without payload; each fetch gets the next bad class
        base = model_digest(self.values)
        for what in DELTA_PLAN:
            payload = self.delta_payloads.get(what, zero)
            # Each bad answer costs us gossipsub score at the victim; below its publish threshold our
            # announcements are dropped unseen until the score decays (once per heartbeat, slower on a loaded
            # machine), so announce again until the fetch comes, within a bound.
            for _ in range(15):
                await t.broadcast(self.announcement(1, base, payload, inline=False))
                if await self.wait(lambda w=what: ("delta", w) in self.served, 4, "", required=False):
                    break
            else:
                self.problems.append(f"timed out waiting for the {what} delta fetch")
                return
            await trio.sleep(REQUEST_TIMEOUT_S + 1.0 if what == "stall" else 0.5)
        await trio.sleep(1.0)


def sections(cluster: Cluster, i: int, malicious: str) -> dict[str, dict[str, object]]:
    others = [s.addr for s in cluster.specs if s.index != i]
    return {
        "peer": {
            "local_steps": 10,
            "min_neighbours": 3 if i == 0 else 2,
            "static_peers": others + ([malicious] if i == 0 else []),
            "rounds": 10_000,
            "round_interval_s": 0.25,
            "request_timeout_s": REQUEST_TIMEOUT_S,
        },
        "learner": {
            "entry": "p2pfl.sim.entry:digits",
            "params": {"peer_index": i, "num_peers": 3, "seed": 3},
        },
    }


def test_a_peer_survives_every_class_of_bad_response_and_keeps_learning(tmp_path: Path) -> None:
    t0 = time.monotonic()
    cluster = Cluster(tmp_path, 3, seed_base=40)
    bad = Malicious(cluster.specs[0].identity.peer_id)
    thread = threading.Thread(target=trio.run, args=(bad.main, 360.0), daemon=True)
    thread.start()
    assert bad.ready.wait(30), "the malicious host did not start"
    try:
        for i in range(3):
            cluster.configure(i, sections(cluster, i, bad.addr))
        cluster.start_many([0, 1, 2])
        assert bad.done.wait(360), ("the attack did not finish", bad.served, bad.problems)
        assert not bad.problems, (bad.problems, bad.served, cluster.explain([0]))
        assert [("snapshot", w) for w in SNAPSHOT_PLAN] == [s for s in bad.served if s[0] == "snapshot"][:7]
        assert [("delta", w) for w in DELTA_PLAN] == [s for s in bad.served if s[0] == "delta"][:6]
        assert cluster.procs[0].poll() is None, cluster.log(0)[-3000:]  # still up
        during = cluster.status(0)
        assert during is not None
        cluster.wait_rounds([0, 1, 2], during["round"] + 5, timeout=90)  # and still learning
        after = cluster.status(0)
        assert [0, 0, 0] == cluster.stop_many([0, 1, 2])  # SIGTERM: a clean exit
    finally:
        cluster.stop_all()
        thread.join(5)
    assert after is not None
    rejected: dict[str, int] = after["rejected"]
    for (kind, what), reason in TRANSPORT_REASONS.items():
        least = sum(1 for r in TRANSPORT_REASONS.values() if r == reason)
        assert rejected.get(reason, 0) >= least, (kind, what, reason, rejected)
    # the crafted envelope and the two [0, 2**63] tensors: counted under the decoder's reasons, which may
    # share a slug with a transport class (a too-large shape is ``oversize``), so count beyond those classes
    decoded = sum(rejected.values()) - len(TRANSPORT_REASONS)
    assert decoded >= 3, rejected
    assert after["val_accuracy"] is not None and after["val_accuracy"] >= 0.8, after
    log = cluster.log(0)
    assert "Traceback" not in log and "peer crashed" not in log, log[-3000:]
    print(f"\nrejected at peer 0: {rejected}; val_accuracy {after['val_accuracy']:.3f}")
    print(f"runtime {time.monotonic() - t0:.1f} s; env PYTHONPATH={os.environ.get('PYTHONPATH')}")
