"""The engine's receive side: gossip validation, announcements, deltas, payloads and snapshots.

Validation order for a received announcement (cheap first; nothing rejected reaches a model; every rejection
is counted by reason): size, schema, network id, sender allowed (all in ``wire.open_envelope``, called from
here only), then, before the signature, the signed timestamp's freshness (:mod:`p2pfl.protocol.freshness`;
against the forwarder), sender evicted or convicted and the rate limits (:mod:`p2pfl.protocol.ratelimit`),
then signature, the signer's own rate, architecture, equivocation (a second signed header of one version:
:mod:`p2pfl.protocol.equivocation`), replay (seq not newer than the replica; counted against its signer,
never the relay), base/gap (-> snapshot), payload digest, tensor names/shapes/dtypes, finiteness, norm
bound, and finally the resulting replica digest. Deltas that arrive while a snapshot of their sender is on
its way are buffered and applied after it. Equivocation proofs share the gossip path (told apart by their
first byte) and convict by their signatures alone.

This module keeps that order, the gossip validator and the delta path (announcements, fetched payloads,
the buffer of early deltas) with the only callers of the wire decoders (``_open``, ``_decode_model``); the
snapshot path and the join (:mod:`p2pfl.protocol.snapshots`) and the equivocation proofs
(:mod:`p2pfl.protocol.proofs`) are its bases, split off where their rules stop sharing a delta's.
"""

from __future__ import annotations

import numpy as np

from p2pfl.protocol.actions import Action, FetchPayload
from p2pfl.protocol.core import _VALIDATED_MAX, _VALIDATED_MAX_BYTES, PENDING_PER_PEER
from p2pfl.protocol.freshness import timestamp_error
from p2pfl.protocol.layout import FloatVec
from p2pfl.protocol.ratelimit import Refused
from p2pfl.protocol.replicas import Replica
from p2pfl.protocol.snapshots import SnapshotSide
from p2pfl.wire import (
    Envelope,
    Header,
    SenderNotAllowedError,
    WireError,
    check_payload,
    decode_tensors,
    open_envelope,
    undo_codec,
)
from p2pfl.wire.proof import is_proof


class ReceiveSide(SnapshotSide):
    """What the engine does with bytes from the network (never raises, whatever the bytes)."""

    def _open(
        self,
        data: bytes | memoryview,
        peer: str | None,
        *,
        expected_sender: str | None = None,
        now: float | None = None,
        blame: list[str] | None = None,
        origin: str | None = None,
        wall_ms: int | None = None,
    ) -> Envelope | str:
        """``open_envelope`` with this network's rules, or the rejection reason. Total: whatever the bytes,
        a reason comes back (a non-WireError is kept as a fault and named ``internal_error``).

        With ``now`` (gossip), a message of an evicted or convicted sender, or over a rate limit, is refused
        before its signature is verified; the (claimed) sender it is refused for is appended to ``blame``.
        With ``wall_ms`` too, so is one whose signed timestamp is out of the freshness window (nobody is
        appended: the forwarder is to blame, :mod:`p2pfl.protocol.freshness`)."""
        gate = None
        if now is not None:

            def gate(h: Header) -> None:
                known = h.sender in (origin, self.peer_id) or h.sender in self.replicas
                if origin is not None and not known:
                    if blame is not None:
                        blame.append(origin)
                    raise Refused("foreign_sender")
                stale = self._timestamp_error(h, wall_ms)
                if stale is not None:
                    raise Refused(stale)
                reason = "evicted" if self.is_evicted(h.sender) else None
                reason = reason or self.rates.before_verify(h.sender, now)
                if reason is not None:
                    if blame is not None:
                        blame.append(h.sender)
                    raise Refused(reason)

        try:
            return open_envelope(
                data,
                limits=self.config.limits,
                network_id=self.config.network_id,
                allowed=self.allowed,
                expected_sender=expected_sender,
                before_signature=gate,
            )
        except (WireError, Refused) as exc:
            return exc.reason
        except Exception as exc:
            return self.fault(peer, "open_envelope", exc)

    def _timestamp_error(self, h: Header, wall_ms: int | None) -> str | None:
        """Why ``h``'s signed timestamp is out of the freshness window at ``wall_ms`` (None: not checked)."""
        if wall_ms is None:
            return None
        cfg = self.config
        return timestamp_error(h.timestamp_ms, wall_ms, cfg.max_version_age_s, cfg.max_clock_skew_s)

    # ----------------------------------------------------------------------------------- inbound

    def admit_sender(self, sender: str, now: float) -> bool:
        """Whether a gossip message whose transport-level origin is ``sender`` is worth reading further:
        not if the sender is evicted or convicted, its sender bucket is empty (a peek: :meth:`accept_gossip`
        charges verified messages), or its publisher bucket is (charged here, one token per message, see
        :mod:`p2pfl.protocol.ratelimit`). For a transport that can refuse a message before its own
        per-message work (a task, the library's signature check): a burst then costs a lookup per message.
        A refusal is counted (``evicted``, ``rate_limited``, ``rate_limited_publisher``) against it."""
        reason = "evicted" if self.is_evicted(sender) else self.rates.before_verify(sender, now)
        if reason is None and not self.rates.publisher_allowed(sender, now):
            reason = "rate_limited_publisher"
        if reason is None:
            return True
        self._reject(reason, sender)
        return False

    def accept_gossip(
        self,
        data: bytes,
        via: str | None = None,
        now: float | None = None,
        origin: str | None = None,
        *,
        wall_ms: int | None = None,
    ) -> bool:
        """Synchronous check for the transport's gossip validator: forward only well-signed deltas of this
        network from allowed, non-evicted senders whose inline payload (if any) would apply: the right
        architecture and size, and tensors that decode to the model's names and shapes, finite and within
        the norm bound. What depends on the replica (replay, base, result digest) is checked on delivery
        (:meth:`handle_announce`). A refused message is never delivered nor relayed: it is counted here, by
        reason, against ``via`` (the forwarder) while the sender is unproven, else against the sender.
        With ``now`` (the transports pass it), the rate limits apply (:mod:`p2pfl.protocol.ratelimit`).
        An equivocation proof is accepted if it verifies (:meth:`_accept_proof`). With ``origin`` (a
        transport whose messages carry their publisher: libp2p's topic per publisher), a delta claiming a
        sender we hold no replica of, other than the origin and ourselves, is refused before its verify
        (``foreign_sender``, against the origin): peers publish only their own deltas, so it comes from the
        origin's flood of fresh identities. (One claiming a known peer goes on to the usual checks: a
        forgery fails its signature, a replay is refused on delivery, both counted as such.) With ``wall_ms``
        (the receiver's wall clock, ms since the epoch; the peer always passes it), a delta signed outside
        the freshness window is refused before its verify (``stale_timestamp``, ``future_timestamp``, against
        ``via``: :mod:`p2pfl.protocol.freshness`); without it (``now`` None, or a caller with no wall clock:
        tests of other rules) the window is not checked. Never raises."""
        if is_proof(data):
            return self._accept_proof(data, via, now)
        if now is not None and not self.rates.relay_allowed(via, now):
            self._reject("rate_limited_relay", via)  # before any parsing: the cheapest drop
            return False
        blame: list[str] = []
        env = self._open(data, via, now=now, blame=blame, origin=origin, wall_ms=wall_ms)
        if isinstance(env, str):
            self._reject(env, blame[0] if blame else via)
            return False
        h = env.header
        over = self.rates.after_verify(h.sender, now) if now is not None and not self._held(h) else None
        if over is not None:
            self._reject(over, h.sender)
            return False
        checked = self._inline_check(h, env.payload)
        if isinstance(checked, str):
            self._reject(checked, h.sender)
            return False
        if len(data) <= _VALIDATED_MAX_BYTES:
            self._validated[bytes(data)] = (env, checked)
            while len(self._validated) > _VALIDATED_MAX:
                self._validated.popitem(last=False)
        return True

    def _held(self, h: Header) -> bool:
        """Whether ``h``'s version is no newer than what we hold (or last held) of its sender: a copy, which
        delivery counts as a duplicate or refuses as a replay, moving nothing. It is not charged to the
        signer's rate: anyone holding a signed message can send copies of it (inside the freshness window
        too), and charged they emptied the bucket that the signer's next version needs."""
        rep = self.replicas.get(h.sender)
        return h.seq <= (rep.seq if rep is not None else self.forgotten.floor(h.sender))

    def _inline_check(self, h: Header, payload: memoryview | None) -> str | FloatVec | None:
        """Why a validated delta announcement must not be relayed (see :meth:`accept_gossip`); else its
        decoded inline delta, or None if it has no payload inline."""
        if h.kind != "delta":
            return "unexpected_kind"
        if self.is_evicted(h.sender):
            return "evicted"
        if payload is None:
            return None  # fetched by digest later: its size is checked before any byte is fetched
        if h.arch != self.layout.arch:
            return "wrong_arch"
        if h.payload_size != self._payload_sizes.get(h.codec):
            return "bad_size"
        delta = self._decode_model(h, payload)
        if isinstance(delta, str):
            return delta
        return self._norm_check(delta) or delta

    def _norm_check(self, delta: FloatVec) -> str | None:
        if self.config.max_delta_norm is not None:
            norm = float(np.linalg.norm(delta.astype(np.float64)))
            if not norm <= self.config.max_delta_norm:
                return "norm_bound"
        return None

    def handle_announce(
        self, data: bytes, via: str, now: float, *, wall_ms: int | None = None
    ) -> list[Action]:
        """A gossip message arrived (delivered by ``via``). With ``wall_ms``, a delta signed outside the
        freshness window is refused against ``via``, as in :meth:`accept_gossip` (a transport may deliver
        without validating, or the window may close between the two calls)."""
        if is_proof(data):
            return self.handle_proof(bytes(data), via, now)
        validated = self._validated.pop(data, None)
        decoded: FloatVec | None = None
        if validated is not None:
            env, decoded = validated
            if self.allowed is not None and not self.allowed(env.header.sender):
                return self._reject(SenderNotAllowedError.reason, via)  # the access list changed meanwhile
        else:
            opened = self._open(data, via)
            if isinstance(opened, str):
                return self._reject(opened, via)
            env = opened
        h = env.header
        stale = self._timestamp_error(h, wall_ms)
        if stale is not None:
            return self._reject(stale, via)
        if h.sender == self.peer_id:
            # transports never echo our own messages: someone re-sent it. We signed it, so nobody is to
            # blame: an honest relay forwards what it cannot tell from a fresh message (counted, unattributed)
            return self._reject("replay", None)
        if h.kind != "delta":
            return self._reject("unexpected_kind", h.sender)
        convicted = self._observe(env, now)
        if convicted is not None:
            return convicted
        return self._consider_delta(h, env.payload, via, now, decoded)

    def _consider_delta(
        self,
        h: Header,
        payload: memoryview | bytes | None,
        via: str,
        now: float,
        decoded: FloatVec | None = None,
    ) -> list[Action]:
        if self.is_evicted(h.sender):
            return self._reject("evicted", h.sender)
        if self.mix_filter is not None and not self.mix_filter(h.sender):
            self.ignored += 1  # relayed from a peer we never mix with (not a neighbour): no replica needed
            return []
        if h.arch != self.layout.arch:
            return self._reject("wrong_arch", h.sender)
        if h.payload_size != self._payload_sizes.get(h.codec):
            # the size of a delta follows from the model's layout: anything else is refused before any
            # byte is fetched (an announcement cannot make us download more than a model)
            return self._reject("bad_size", h.sender)
        rep = self.replicas.get(h.sender)
        if rep is not None and h.seq == rep.seq and h.result == rep.digest:
            self.duplicates += 1  # the version we hold (e.g. a snapshot overtook it): nothing is wrong
            return []
        if rep is not None and h.seq <= rep.seq:
            return self._reject("replay", h.sender)
        if rep is None and h.seq <= self.forgotten.floor(h.sender):
            return self._reject("replay", h.sender)  # a version of a replica forgotten for idleness
        # A first delta from the model we started from (a network's common initial model) continues a version
        # 0 we hold: no snapshot fetch (16 peers fetched 240 snapshots before round 1).
        from_start = rep is None and h.seq == 1 and h.base == self._initial_digest
        if not from_start and (rep is None or h.seq != rep.seq + 1 or h.base != rep.digest):
            if payload is not None:
                self._buffer(h, payload)
            return self._want_snapshot(h.sender, via, now)
        if payload is None:
            started = self._fetching.get(h.payload_digest)
            if started is not None and now - started < self.config.snapshot_retry_s:
                return []
            inflight = self._fetching_for.get(h.sender)
            retry = self.config.snapshot_retry_s
            if inflight is not None and inflight[0] == h.seq and now - inflight[1] < retry:
                return []  # one fetch per sender and version: a flood of announcements starts one fetch
            self._fetching[h.payload_digest] = now
            self._fetching_for[h.sender] = (h.seq, now)
            return [FetchPayload(peer=h.sender, via=via, header=h)]
        if rep is not None:
            return self._apply_delta(rep, h, payload, now, decoded)
        start = Replica(h.sender, self._initial_vec.copy(), 0, h.base, now)  # kept if the delta applies
        actions = self._apply_delta(start, h, payload, now, decoded)
        if start.seq == h.seq:
            self.replicas[h.sender] = start
            actions += self._drain(h.sender, now)  # a later delta that arrived first was buffered
        return actions

    def _buffer(self, h: Header, payload: memoryview | bytes) -> None:
        pending = self._pending.setdefault(h.sender, {})
        pending[h.seq] = (h, bytes(payload))
        while len(pending) > PENDING_PER_PEER:
            del pending[min(pending)]

    def _drain(self, peer: str, now: float) -> list[Action]:
        """Apply buffered deltas that continue the (new) replica of ``peer``; forget older ones."""
        pending = self._pending.pop(peer, {})
        rep = self.replicas.get(peer)
        actions: list[Action] = []
        while rep is not None and rep.seq + 1 in pending:
            h, payload = pending.pop(rep.seq + 1)
            if h.base != rep.digest:
                break
            actions += self._apply_delta(rep, h, payload, now)
            if rep.seq != h.seq:
                break
        return actions

    def _decode_model(self, h: Header, payload: memoryview | bytes) -> FloatVec | str:
        """Decode a payload into a flat float32 vector, or return the rejection reason (never raises)."""
        try:
            tensors = decode_tensors(payload, limits=self.config.limits)
            like = self.layout.unflatten(self.own)
            tensors = undo_codec(tensors, h.codec, like)
            if self.layout.matches(tensors) is not None:
                return "wrong_shape"
            vec = self.layout.flatten(tensors)
        except WireError as exc:
            return exc.reason
        except Exception as exc:
            return self.fault(h.sender, "decode_tensors", exc)
        if not np.isfinite(vec).all():  # e.g. a finite float64 beyond float32's range
            return "non_finite"
        return vec

    def _apply_delta(
        self,
        rep: Replica,
        h: Header,
        payload: memoryview | bytes,
        now: float,
        decoded: FloatVec | None = None,
    ) -> list[Action]:
        """Apply the next version; ``decoded``: the payload as the gossip validator decoded and checked it."""
        if decoded is None:
            delta = self._decode_model(h, payload)
            if isinstance(delta, str):
                return self._reject(delta, h.sender)
            bound = self._norm_check(delta)
            if bound is not None:
                return self._reject(bound, h.sender)
        else:
            delta = decoded
        new = rep.vec + delta
        if not np.isfinite(new).all():
            return self._reject("non_finite", h.sender)
        if self.layout.digest(new) != h.result:
            self._reject("result_mismatch", h.sender)
            return self._want_snapshot(h.sender, h.sender, now)
        rep.vec, rep.seq, rep.digest, rep.updated_at, rep.meta = new, h.seq, h.result, now, h.meta
        self._fetching.pop(h.payload_digest, None)
        self._fetching_for.pop(h.sender, None)
        self._remember_payload(h.payload_digest, bytes(payload))
        self.applied += 1
        return []

    def fetch_failed(self, h: Header, reason: str, peer: str | None = None) -> list[Action]:
        """A payload fetch from ``peer`` (default: the sender) failed: count ``reason``, allow a retry."""
        self._fetching.pop(h.payload_digest, None)
        if self._fetching_for.get(h.sender, (None,))[0] == h.seq:
            del self._fetching_for[h.sender]
        return self._reject(reason, peer or h.sender)

    def handle_payload(
        self, h: Header, payload: bytes, now: float, source: str | None = None
    ) -> list[Action]:
        """A payload fetched by digest (from ``source``, default the sender) arrived for a header we accepted
        earlier. Bytes that are not the signed payload count against ``source``; a payload that is the signed
        one but fails to decode or apply counts against its signer."""
        source = source or h.sender
        if self._fetching_for.get(h.sender, (None,))[0] == h.seq:
            del self._fetching_for[h.sender]  # this fetch is over, whatever its bytes
        try:
            check_payload(payload, h)
        except WireError as exc:
            self._fetching.pop(h.payload_digest, None)
            return self._reject(exc.reason, source)
        except Exception as exc:
            self._fetching.pop(h.payload_digest, None)
            return self._reject(self.fault(source, "check_payload", exc), source)
        return self._consider_delta(h, payload, h.sender, now)
