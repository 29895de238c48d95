"""A hostile p2pfl peer, as its own OS process, for ``tests/network/test_hostile_peer.py``.

It speaks the real protocol over its own :class:`Libp2pTransport` (same network id, so it joins the gossip
topic), dials the honest peers given on the command line and, within bounded time, sends every kind of bad
update an honest peer must refuse:

* ``gap``: a valid delta on a base the honest peers have never seen, so each of them fetches the hostile's
  snapshot (a valid model, served on ``SNAPSHOT_PROTOCOL``): the hostile is then a replica;
* ``nan``: a delta signed by the hostile's own key whose inline payload holds NaN: refused by every honest
  peer's gossip validator (so never relayed);
* ``wrong_shape``: deltas with transposed/flattened tensors, and with renamed tensors;
* ``oversize_elements``: a tiny payload declaring a tensor of 2^32 elements (a decompression-bomb shape);
* ``digest_mismatch``: a delta announced without its payload; the hostile serves bytes that do not match the
  signed digest when the honest peers fetch it by digest over ``DELTA_PROTOCOL``;
* ``oversize_fetch``: a delta announced without its payload whose (matching) payload is larger than the
  honest peers' ``max_model_bytes``;
* ``replay``: honest peers' own, validly signed envelopes captured from gossip and re-broadcast later;
* ``forged``: envelopes whose header names an honest peer as sender but which the hostile key signed.

Every hostile delta is version 1 on top of the snapshot (version 0): were one accepted, the honest peers'
version logs would show the hostile contributing a version above 0. The snapshot's values are a copy of an
honest peer's public model (a free rider), so the aggregation has no reason to evict it before the attacks.

Usage (prints one JSON report on stdout, exit code 0 if every phase ran)::

    python -m tests.network.hostile --seed HEX --network digits --peer MULTIADDR [--peer ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt
import trio

from p2pfl.errors import TransportError
from p2pfl.identity import Identity
from p2pfl.protocol import DELTA_PROTOCOL, SNAPSHOT_PROTOCOL, Layout
from p2pfl.transport.libp2p import Libp2pTransport
from p2pfl.wire import (
    SIGNING_DOMAIN,
    ZERO_DIGEST,
    Envelope,
    Header,
    Meta,
    WireError,
    decode_tensors,
    digest,
    encode_header,
    encode_tensors,
    model_digest,
    open_envelope,
    seal,
)

Params = dict[str, npt.NDArray[np.float32]]

#: Size of the payload served for ``oversize_fetch``: above the honest peers' configured max_model_bytes.
OVERSIZE_FETCH_BYTES = 2 * 1024 * 1024
#: Pause between bursts of invalid messages, for the honest peers' gossipsub score of us to recover (x0.9/s).
COOL_S = 12.0


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def raw_payload(entries: list[tuple[str, str, list[int], bytes]]) -> bytes:
    """Payload bytes built by hand (``encode_tensors`` refuses NaN): entries sorted by name, canonical."""
    return _pack([list(e) for e in sorted(entries, key=lambda e: e[0].encode("utf-8"))])


def frame(header_bytes: bytes, signature: bytes, payload: bytes | None) -> bytes:
    """An envelope from its parts, without ``seal``'s checks (for forged signatures)."""
    return (
        b"\x94\x01"
        + _pack(header_bytes)
        + _pack(signature)
        + (b"\xc0" if payload is None else _pack(payload))
    )


@dataclass
class Captured:
    """Honest envelopes seen on gossip, per sender: the first one (to replay) and how many."""

    first: dict[str, tuple[float, Envelope, bytes]] = field(default_factory=dict)
    #: when a version two above the first one was first seen, per sender
    passed: dict[str, float] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)

    def superseded(self, sender: str, now: float, settle_s: float) -> bool:
        """Whether a version two above the first captured one was seen ``settle_s`` ago: every honest replica
        of ``sender`` is then past the first version, so re-sending it is a replay (re-sending the version a
        replica still holds is a harmless duplicate, and counted as such)."""
        seen_at = self.passed.get(sender)
        return seen_at is not None and now - seen_at >= settle_s


@dataclass
class Report:
    peer_id: str
    connected: list[str] = field(default_factory=list)
    captured: dict[str, int] = field(default_factory=dict)
    snapshot_source: str = ""
    snapshots_served: dict[str, int] = field(default_factory=dict)
    payload_requests: dict[str, list[str]] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    phases: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


class Hostile:
    def __init__(self, identity: Identity, network_id: str, honest: list[str]) -> None:
        self.identity = identity
        self.network_id = network_id
        self.honest_addrs = honest
        self.honest = [a.rsplit("/p2p/", 1)[1] for a in honest]
        self.report = Report(peer_id=identity.peer_id)
        self.captured = Captured()
        self.snapshot: bytes | None = None
        self.snapshot_digest = ZERO_DIGEST
        self.layout: Layout | None = None
        self.values: Params = {}
        #: digest -> (label, bytes served when an honest peer fetches it)
        self.served: dict[bytes, tuple[str, bytes]] = {}
        self._t: Libp2pTransport | None = None

    @property
    def t(self) -> Libp2pTransport:
        assert self._t is not None
        return self._t

    # ------------------------------------------------------------------------------ handlers

    async def on_gossip(self, via: str, data: bytes) -> None:
        try:
            env = open_envelope(data, network_id=self.network_id)
        except WireError:
            return
        sender = env.header.sender
        if sender not in self.honest:
            return
        now = time.monotonic()
        self.captured.count[sender] = self.captured.count.get(sender, 0) + 1
        if sender not in self.captured.first:
            self.captured.first[sender] = (now, env, bytes(data))
        first_seq = self.captured.first[sender][1].header.seq
        if sender not in self.captured.passed and env.header.seq >= first_seq + 2:
            self.captured.passed[sender] = now

    async def serve_snapshot(self, peer: str, request: bytes) -> bytes:
        self.report.snapshots_served[peer] = self.report.snapshots_served.get(peer, 0) + 1
        if self.snapshot is None:
            raise TransportError("no snapshot yet")
        return self.snapshot

    async def serve_payload(self, peer: str, request: bytes) -> bytes:
        label, body = self.served.get(bytes(request), ("unknown", b""))
        self.report.payload_requests.setdefault(label, []).append(peer)
        if not body:
            raise TransportError("unknown payload digest")
        return body

    # ------------------------------------------------------------------------------- helpers

    async def wait_for(self, what: str, check: Callable[[], bool], timeout: float) -> bool:
        with trio.move_on_after(timeout) as scope:
            while not check():
                await trio.sleep(0.05)
        if scope.cancelled_caught:
            self.report.problems.append(f"timed out after {timeout} s waiting for {what}")
        return not scope.cancelled_caught

    async def send(self, label: str, envelope: bytes) -> None:
        try:
            await self.t.broadcast(envelope)
        except TransportError as exc:
            self.report.problems.append(f"{label}: broadcast failed: {exc}")
            return
        self.report.sent[label] = self.report.sent.get(label, 0) + 1

    def delta_header(self, payload: bytes, *, seq: int = 1, size: int | None = None) -> Header:
        """A delta of the hostile's own model, version ``seq`` on top of its snapshot (version 0)."""
        assert self.layout is not None
        return Header(
            kind="delta",
            network_id=self.network_id,
            sender=self.identity.peer_id,
            seq=seq,
            base=self.snapshot_digest,
            # one claimed model per version, whatever the payload: two would be an equivocation, and the
            # honest peers would convict us before the later attacks reach their checks
            result=digest(b"hostile result %d" % seq),
            arch=self.layout.arch,
            payload_digest=digest(payload),
            payload_size=len(payload) if size is None else size,
            codec="raw",
            meta=Meta(samples=100, loss=0.1, round=1),
            timestamp_ms=int(time.time() * 1000),
        )

    def own_delta(self, payload: bytes, *, inline: bool = True) -> bytes:
        return seal(self.identity, self.delta_header(payload), payload if inline else None)

    # ------------------------------------------------------------------------------- phases

    async def connect_all(self, timeout: float) -> None:
        deadline = trio.current_time() + timeout
        pending = list(self.honest_addrs)
        while pending and trio.current_time() < deadline:
            addr = pending.pop(0)
            try:
                self.report.connected.append(await self.t.connect(addr))
            except TransportError:
                pending.append(addr)
                await trio.sleep(0.2)
        if pending:
            self.report.problems.append(f"could not connect to {pending}")

    async def make_snapshot(self) -> None:
        """Copy an honest peer's public model and sign it as the hostile's own version 0."""
        params: Mapping[str, npt.NDArray[Any]] | None = None
        for peer in self.honest:
            try:
                data = await self.t.request(peer, SNAPSHOT_PROTOCOL, b"", max_response=1 << 24, timeout=10.0)
                env = open_envelope(data, network_id=self.network_id, expected_sender=peer)
                assert env.payload is not None
                params = decode_tensors(env.payload)
                self.report.snapshot_source = peer
                break
            except (TransportError, WireError, AssertionError) as exc:
                self.report.problems.append(f"snapshot of {peer}: {exc}")
        if params is None:
            raise RuntimeError("no honest snapshot to copy")
        self.values = {k: np.array(v, dtype=np.float32) for k, v in params.items()}
        self.layout = Layout.of(self.values)
        payload = encode_tensors(self.values)
        self.snapshot_digest = model_digest(self.values)
        header = Header(
            kind="snapshot",
            network_id=self.network_id,
            sender=self.identity.peer_id,
            seq=0,
            base=ZERO_DIGEST,
            result=self.snapshot_digest,
            arch=self.layout.arch,
            payload_digest=digest(payload),
            payload_size=len(payload),
            codec="raw",
            timestamp_ms=int(time.time() * 1000),
        )
        self.snapshot = seal(self.identity, header, payload)

    def zero_entries(self) -> list[tuple[str, str, list[int], bytes]]:
        return [
            (n, "float32", list(v.shape), np.zeros(v.shape, np.float32).tobytes())
            for n, v in self.values.items()
        ]

    async def attack_nan(self) -> None:
        entries = self.zero_entries()
        name, dtype, shape, data = entries[0]
        arr = np.frombuffer(data, np.float32).copy()
        arr[0] = np.nan
        entries[0] = (name, dtype, shape, arr.tobytes())
        await self.send("nan", self.own_delta(raw_payload(entries)))

    async def attack_wrong_shape(self) -> None:
        # every tensor flattened (same names, same element count: only the shapes are wrong)
        flat = [(n, d, [int(np.prod(s))], b) for n, d, s, b in self.zero_entries()]
        await self.send("wrong_shape", self.own_delta(raw_payload(flat)))
        # the right shapes under other names
        renamed = [(f"evil.{n}", d, s, b) for n, d, s, b in self.zero_entries()]
        await self.send("wrong_shape", self.own_delta(raw_payload(renamed)))

    async def attack_oversize_elements(self) -> None:
        entries = self.zero_entries()
        name = entries[0][0]
        entries[0] = (name, "float32", [65536, 65536], b"\x00" * 16)  # declares 2^32 elements, holds 4
        await self.send("oversize_elements", self.own_delta(raw_payload(entries)))

    async def attack_by_digest(self) -> None:
        # digest_mismatch: the announced payload is a plausible zero delta; what is served is not it
        honest_payload = raw_payload(self.zero_entries())
        garbage = bytes(b ^ 0x5A for b in honest_payload)
        self.served[digest(honest_payload)] = ("digest_mismatch", garbage)
        await self.send("digest_mismatch", self.own_delta(honest_payload, inline=False))
        # oversize_fetch: the payload matches its signed digest and size, but is beyond the receivers' cap
        big = _pack([["blob", "uint8", [OVERSIZE_FETCH_BYTES], bytes(OVERSIZE_FETCH_BYTES)]])
        self.served[digest(big)] = ("oversize_fetch", big)
        await self.send("oversize_fetch", self.own_delta(big, inline=False))

    async def attack_replay(self) -> None:
        for sender in self.honest:
            first = self.captured.first.get(sender)
            if first is None:
                self.report.problems.append(f"replay: nothing captured from {sender}")
                continue
            await self.send("replay", first[2])

    async def attack_forged(self) -> None:
        for victim in self.honest:
            first = self.captured.first.get(victim)
            if first is None:
                continue
            env = first[1]
            # the victim's own (valid) payload, announced as a far newer version, but signed by us
            header = dataclasses.replace(env.header, seq=env.header.seq + 1000)
            hb = encode_header(header)
            payload = bytes(env.payload) if env.payload is not None else None
            await self.send("forged", frame(hb, self.identity.sign(SIGNING_DOMAIN + hb), payload))

    async def announce_gap(self) -> None:
        """A valid zero delta on top of a version nobody has: each honest peer requests our snapshot."""
        payload = raw_payload(self.zero_entries())
        header = dataclasses.replace(self.delta_header(payload, seq=900), base=digest(b"gap"))
        await self.send("gap", seal(self.identity, header, payload))

    async def stall(self, seconds: float, period: float) -> None:
        """Liveness probe (not used by the test): every ``period`` s, a delta with a gap makes each honest
        peer fetch our unchanged snapshot again, which refreshes our replica there as if we had published."""
        deadline = trio.current_time() + seconds
        k = 0
        while trio.current_time() < deadline:
            k += 1
            payload = raw_payload(self.zero_entries())
            header = dataclasses.replace(self.delta_header(payload, seq=1000 + k), base=digest(b"gap%d" % k))
            await self.send("stall", seal(self.identity, header, payload))
            await trio.sleep(period)

    # ---------------------------------------------------------------------------------- main

    async def run(self, timeout: float, stall_s: float = 0.0, stall_period_s: float = 8.0) -> Report:
        t0 = time.monotonic()
        with trio.move_on_after(timeout) as scope:
            async with Libp2pTransport.open(seed=self.identity.seed, network_id=self.network_id) as t:
                self._t = t
                t.set_gossip_handler(self.on_gossip)
                t.set_request_handler(SNAPSHOT_PROTOCOL, self.serve_snapshot)
                t.set_request_handler(DELTA_PROTOCOL, self.serve_payload)
                await self.steps(timeout)
                if stall_s > 0:
                    await self.stall(stall_s, stall_period_s)
                    self.report.phases.append("stall")
        if scope.cancelled_caught:
            self.report.problems.append(f"overall timeout of {timeout} s")
        self.report.captured = dict(self.captured.count)
        self.report.elapsed_s = round(time.monotonic() - t0, 2)
        return self.report

    async def steps(self, timeout: float) -> None:
        phase = self.report.phases.append
        await self.connect_all(min(15.0, timeout / 3))
        phase("connected")
        # gossip flows both ways once every honest peer has been heard from (mesh formed, subscriptions seen)
        await self.wait_for("honest gossip", lambda: len(self.captured.first) == len(self.honest), 20.0)
        phase("captured")
        await self.make_snapshot()
        phase("snapshot")
        await self.announce_gap()  # a valid delta with a gap: every honest peer fetches our snapshot
        served = self.report.snapshots_served
        await self.wait_for("snapshot fetches", lambda: all(p in served for p in self.honest), 10.0)
        phase("gap")
        # replay only versions every honest replica is provably past (a slow CI machine stalls the peers)
        await self.wait_for(
            "newer honest versions",
            lambda: all(self.captured.superseded(p, time.monotonic(), 1.0) for p in self.honest),
            20.0,
        )
        await self.attack_replay()
        phase("replay")
        await self.attack_by_digest()
        requests = self.report.payload_requests

        def fetched() -> bool:
            return all(
                # oversize_fetch is refused before any fetch: its declared size is not the model's
                set(self.honest) <= set(requests.get(k, ()))
                for k in ("digest_mismatch",)
            )

        await self.wait_for("payload fetches", fetched, 10.0)
        phase("by_digest")
        # From here each message (and the bad payload above) is refused as invalid and costs us 10 points of
        # gossipsub score at every honest peer (decaying x0.9 per second); below -40 they drop our messages
        # unseen. Pace the invalid ones so that each reaches the checks it targets.
        await trio.sleep(COOL_S / 2)
        await self.attack_nan()  # refused by the honest peers' gossip validators (never relayed)
        phase("nan")
        await self.attack_wrong_shape()
        await self.attack_oversize_elements()
        phase("wrong_shape+oversize_elements")
        await trio.sleep(COOL_S)
        await self.attack_forged()
        phase("forged")
        await trio.sleep(1.5)  # let the last messages be delivered and counted
        phase("done")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", required=True, help="64 hex digits: the hostile's Ed25519 seed")
    ap.add_argument("--network", required=True)
    ap.add_argument("--peer", action="append", required=True, help="honest peer multiaddr (with /p2p/)")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--stall-s", type=float, default=0.0, help="after the attacks, run the liveness probe")
    ap.add_argument("--stall-period-s", type=float, default=8.0)
    args = ap.parse_args(argv)
    hostile = Hostile(Identity(bytes.fromhex(args.seed)), args.network, args.peer)
    report = trio.run(hostile.run, args.timeout, args.stall_s, args.stall_period_s)
    print(json.dumps(dataclasses.asdict(report), sort_keys=True), flush=True)
    return 0 if "done" in report.phases and not report.problems else 1


if __name__ == "__main__":
    sys.exit(main())
