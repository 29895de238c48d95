"""The sans-I/O gossip-learning engine: events in, decisions out.

The engine owns a peer's learning state (own model, public model, replicas of other peers' public models,
scores) and decides, for each event, what to apply, fetch, publish or evict. It never touches a socket, a file
or a clock: the caller passes ``now`` with every event and carries out the returned :class:`Action` values.
That keeps every protocol decision testable exactly and fast, and lets the same engine run over libp2p and
over the in-memory transport.

Versions. A peer's *public model* has a version ``seq``: version 0 is the initial model, and every published
delta (``kind="delta"``, ``seq`` s, ``base`` = digest of version s-1, ``result`` = digest of version s)
moves it one step. A receiver keeps a replica per sender and applies a delta only when it is exactly the
next version of that replica; on a gap or a digest mismatch it asks the sender for a snapshot (a signed full
model). Deltas that arrive while that snapshot is on its way are buffered and applied after it.

Validation order for a received announcement (cheap first; nothing rejected reaches a model; every rejection
is counted by reason): size, schema, network id, sender allowed, signature (all in ``wire.open_envelope``),
then sender evicted, architecture, replay (seq not newer than the replica), base/gap (-> snapshot), payload
digest, tensor names/shapes/dtypes, finiteness, norm bound, and finally the resulting replica digest.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from p2pfl.aggregation import AggregationConfig, aggregate, median
from p2pfl.errors import ConfigError
from p2pfl.identity import Identity
from p2pfl.protocol.actions import (
    INTERNAL_ERROR,
    Action,
    Evict,
    Fault,
    FetchPayload,
    Publish,
    Readmit,
    RequestSnapshot,
)
from p2pfl.protocol.bans import BanBook
from p2pfl.protocol.config import ProtocolConfig
from p2pfl.protocol.layout import FloatVec, Layout, Params
from p2pfl.protocol.replicas import Contribution, Replica, RoundOutcome
from p2pfl.scoring import ContributionScorer, ScoreRecord, ScoringConfig
from p2pfl.wire import (
    CODECS,
    ZERO_DIGEST,
    Envelope,
    Header,
    Meta,
    SenderNotAllowedError,
    WireError,
    apply_codec,
    check_payload,
    decode_tensors,
    encode_tensors,
    open_envelope,
    payload_parts,
    seal,
    undo_codec,
)

PENDING_PER_PEER = 16
#: validated envelopes kept for their delivery (see GossipEngine.accept_gossip): at most this many, each of
#: at most this size (a delta announcement with its payload inline; larger payloads are fetched)
_VALIDATED_MAX = 64
_VALIDATED_MAX_BYTES = 1 << 20
#: faults kept until the caller takes them (see GossipEngine.take_faults); older ones are dropped
_FAULTS_MAX = 64


class GossipEngine:
    """One peer's protocol state machine. Not thread-safe: drive it from one task."""

    def __init__(
        self,
        identity: Identity,
        config: ProtocolConfig,
        initial: Mapping[str, npt.NDArray[Any]],
        *,
        aggregation: AggregationConfig | None = None,
        scoring: ScoringConfig | None = None,
        scoring_enabled: bool = True,
        allowed: Callable[[str], bool] | None = None,
        mix_filter: Callable[[str], bool] | None = None,
    ) -> None:
        self.identity = identity
        self.config = config
        self.layout = Layout.of(initial)
        self.aggregation = aggregation or AggregationConfig()
        self.scorer = ContributionScorer(scoring) if scoring_enabled else None
        self.allowed = allowed
        self.mix_filter = mix_filter
        self.own: FloatVec = self.layout.flatten(initial)
        self.public: FloatVec = self.own.copy()
        self.public_digest = self.layout.digest(self.public)
        self.seq = 0
        self.replicas: dict[str, Replica] = {}
        self.rejections: Counter[str] = Counter()
        self.rejections_by_peer: dict[str, Counter[str]] = {}
        self.applied = 0
        self.duplicates = 0
        self.ignored = 0
        self.snapshot_requests = 0
        self._payloads: OrderedDict[bytes, bytes] = OrderedDict()
        self._snapshot_wanted: dict[str, float] = {}
        self._fetching: dict[bytes, float] = {}
        self._snapshot_cache: bytes | None = None
        zeros = self.layout.unflatten(np.zeros(self.layout.size, np.float32))
        self._payload_sizes = {codec: len(encode_tensors(apply_codec(zeros, codec))) for codec in CODECS}
        # deltas that arrived while a snapshot of their sender was on its way: applied after it, in order
        self._pending: dict[str, dict[int, tuple[Header, bytes]]] = {}
        #: evicted peers and when their evictions expire
        self.bans = BanBook(config.readmit_after_s)
        #: per peer, the replica version (seq, digest) last scored and its combined score: each version is
        #: scored once. Rescoring an unchanged replica every own round made a neighbour that is slower than
        #: us, or just restarted from an old checkpoint, collect "consecutive" bad scores for one stale model
        #: (measured: a restarted peer evicted by both neighbours within 1 s, before it published again).
        self._last_scored: dict[str, tuple[tuple[int, bytes], float]] = {}
        #: per peer, our own seq when we last scored a new version of it (to tell a peer coming back)
        self._heard_at: dict[str, int] = {}
        #: envelopes the gossip validator opened, by their bytes, until handle_announce takes them: each
        #: message's signature is checked once, not twice. Small messages only, few of them (a message
        #: validated but never delivered ages out).
        #: The inline delta the validator decoded rides along, so it is decoded once too.
        self._validated: OrderedDict[bytes, tuple[Envelope, FloatVec | None]] = OrderedDict()
        #: unexpected exceptions met while handling remote input, for the caller to log (bounded)
        self.faults: deque[Fault] = deque(maxlen=_FAULTS_MAX)

    # -------------------------------------------------------------------------------- properties

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    def own_params(self) -> Params:
        return {k: v.copy() for k, v in self.layout.unflatten(self.own).items()}

    def public_params(self) -> Params:
        return {k: v.copy() for k, v in self.layout.unflatten(self.public).items()}

    def is_evicted(self, peer: str) -> bool:
        return self.scorer is not None and self.scorer.status(peer) == "evicted"

    def _ban(self, peer: str, now: float) -> None:
        self.bans.ban(peer, now)

    def evictions_of(self, peer: str) -> int:
        """How many times ``peer`` was evicted (each readmission that ends badly adds one)."""
        return self.bans.evictions_of(peer)

    def readmissions(self, now: float) -> list[Readmit]:
        """Readmit every peer whose eviction expired at ``now`` (on probation: scored, not mixed, until
        ``probation_length`` good scores; one bad score evicts it again, for twice as long).

        A false eviction (an honest peer restarted from an old checkpoint, or drifting on very skewed data) is
        not forever, and a poisoner costs one scored, unmixed model per expiry."""
        if self.scorer is None:
            return []
        return self.bans.readmissions(now, self.scorer)

    # ------------------------------------------------------------------------------------ restore

    def restore(
        self, own: Mapping[str, npt.NDArray[Any]], public: Mapping[str, npt.NDArray[Any]], seq: int
    ) -> None:
        """Resume from a checkpoint (own model, last published public model and its version)."""
        if self.layout.matches(own) or self.layout.matches(public):
            raise ConfigError("checkpoint does not match the model's architecture")
        self.own = self.layout.flatten(own)
        self.public = self.layout.flatten(public)
        self.public_digest = self.layout.digest(self.public)
        self.seq = seq
        self._snapshot_cache = None

    def set_own(self, params: Mapping[str, npt.NDArray[Any]]) -> None:
        """Replace the own model (e.g. a rollback); the public model changes at the next round."""
        self.own = self.layout.flatten(params)

    # -------------------------------------------------------------------------------- rejections

    def _reject(self, reason: str, peer: str | None) -> list[Action]:
        self.rejections[reason] += 1
        if peer is not None:
            self.rejections_by_peer.setdefault(peer, Counter())[reason] += 1
        return []

    def reject(self, reason: str, peer: str | None) -> None:
        """Count a rejection found outside the engine (a failed fetch, an exception in a handler)."""
        self._reject(reason, peer)

    def fault(self, peer: str | None, where: str, error: BaseException) -> str:
        """Keep an unexpected exception met while handling ``peer``'s input; returns ``internal_error``."""
        self.faults.append(Fault(peer, where, error))
        return INTERNAL_ERROR

    def take_faults(self) -> list[Fault]:
        """The faults kept since the last call (oldest first), for the caller to log."""
        out = list(self.faults)
        self.faults.clear()
        return out

    def _open(
        self, data: bytes | memoryview, peer: str | None, *, expected_sender: str | None = None
    ) -> Envelope | str:
        """``open_envelope`` with this network's rules, or the rejection reason. Total: whatever the bytes,
        a reason comes back (a non-WireError is kept as a fault and named ``internal_error``)."""
        try:
            return open_envelope(
                data,
                limits=self.config.limits,
                network_id=self.config.network_id,
                allowed=self.allowed,
                expected_sender=expected_sender,
            )
        except WireError as exc:
            return exc.reason
        except Exception as exc:
            return self.fault(peer, "open_envelope", exc)

    # ----------------------------------------------------------------------------------- inbound

    def accept_gossip(self, data: bytes, via: str | None = None) -> bool:
        """Synchronous check for the transport's gossip validator: forward only well-signed deltas of this
        network from allowed, non-evicted senders whose inline payload (if any) would apply: the right
        architecture and size, and tensors that decode to the model's names and shapes, finite and within
        the norm bound. What depends on the replica (replay, base, result digest) is checked on delivery
        (:meth:`handle_announce`). A refused message is never delivered nor relayed: it is counted here, by
        reason, against ``via`` (the forwarder) while the sender is unproven, else against the sender.
        Never raises."""
        env = self._open(data, via)
        if isinstance(env, str):
            self._reject(env, via)
            return False
        h = env.header
        checked = self._inline_check(h, env.payload)
        if isinstance(checked, str):
            self._reject(checked, h.sender)
            return False
        if len(data) <= _VALIDATED_MAX_BYTES:
            self._validated[bytes(data)] = (env, checked)
            while len(self._validated) > _VALIDATED_MAX:
                self._validated.popitem(last=False)
        return True

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

    def handle_announce(self, data: bytes, via: str, now: float) -> list[Action]:
        """A gossip message arrived (delivered by ``via``)."""
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
        if h.sender == self.peer_id:  # transports never echo our own messages: someone re-sent it
            return self._reject("replay", via)
        if h.kind != "delta":
            return self._reject("unexpected_kind", h.sender)
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
        if rep is None or h.seq != rep.seq + 1 or h.base != rep.digest:
            if payload is not None:
                self._buffer(h, payload)
            return self._want_snapshot(h.sender, via, now)
        if payload is None:
            started = self._fetching.get(h.payload_digest)
            if started is not None and now - started < self.config.snapshot_retry_s:
                return []
            self._fetching[h.payload_digest] = now
            return [FetchPayload(peer=h.sender, via=via, header=h)]
        return self._apply_delta(rep, h, payload, now, decoded)

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

    def _want_snapshot(self, peer: str, via: str, now: float) -> list[Action]:
        self.snapshot_requests += 1
        asked = self._snapshot_wanted.get(peer)
        if asked is not None and now - asked < self.config.snapshot_retry_s:
            return []
        self._snapshot_wanted[peer] = now
        return [RequestSnapshot(peer=peer, via=via)]

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
        self._remember_payload(h.payload_digest, bytes(payload))
        self.applied += 1
        return []

    def fetch_failed(self, h: Header, reason: str, peer: str | None = None) -> list[Action]:
        """A payload fetch from ``peer`` (default: the sender) failed: count ``reason``, allow a retry."""
        self._fetching.pop(h.payload_digest, None)
        return self._reject(reason, peer or h.sender)

    def snapshot_failed(self, peer: str, reason: str) -> list[Action]:
        """A snapshot request failed: count it (the retry interval still applies)."""
        return self._reject(f"snapshot_{reason}", peer)

    def handle_payload(
        self, h: Header, payload: bytes, now: float, source: str | None = None
    ) -> list[Action]:
        """A payload fetched by digest (from ``source``, default the sender) arrived for a header we accepted
        earlier. Bytes that are not the signed payload count against ``source``; a payload that is the signed
        one but fails to decode or apply counts against its signer."""
        source = source or h.sender
        try:
            check_payload(payload, h)
        except WireError as exc:
            self._fetching.pop(h.payload_digest, None)
            return self._reject(exc.reason, source)
        except Exception as exc:
            self._fetching.pop(h.payload_digest, None)
            return self._reject(self.fault(source, "check_payload", exc), source)
        return self._consider_delta(h, payload, h.sender, now)

    def handle_snapshot(self, data: bytes, expected_sender: str, now: float) -> list[Action]:
        """A snapshot of ``expected_sender``'s public model arrived (signed by that peer)."""
        self._snapshot_wanted.pop(expected_sender, None)
        env = self._open_snapshot(data, expected_sender)
        if isinstance(env, str):
            return self._reject(env, expected_sender)
        h = env[0].header
        rep = self.replicas.get(h.sender)
        if rep is not None and h.seq < rep.seq:
            return self._reject("stale_snapshot", h.sender)
        if rep is not None and h.seq == rep.seq:
            if h.result != rep.digest:  # two different models signed as the same version
                return self._reject("equivocation", h.sender)
            return self._drain(h.sender, now)  # nothing new: the replica does not count as fresh
        self.replicas[h.sender] = Replica(h.sender, env[1], h.seq, h.result, now, h.meta)
        return self._drain(h.sender, now)

    def _open_snapshot(self, data: bytes, expected_sender: str) -> tuple[Envelope, FloatVec] | str:
        env = self._open(data, expected_sender, expected_sender=expected_sender)
        if isinstance(env, str):
            return env
        h = env.header
        if h.kind != "snapshot":
            return "unexpected_kind"
        if self.is_evicted(h.sender):
            return "evicted"
        if h.arch != self.layout.arch:
            return "wrong_arch"
        if env.payload is None:
            return "missing_payload"
        vec = self._decode_model(h, env.payload)
        if isinstance(vec, str):
            return vec
        if h.codec != "raw":
            return "unexpected_codec"
        if self.layout.digest(vec) != h.result:
            return "result_mismatch"
        return env, vec

    def join_from_snapshots(self, snapshots: Mapping[str, bytes], now: float, *, resume: bool = False) -> int:
        """Start from the robust (median) aggregate of several neighbours' snapshots, never one peer's word.

        Returns how many snapshots were usable; the own model changes only if at least ``join_quorum`` were.
        The snapshots also seed the replicas, so deltas from those peers apply at once. A peer resuming from
        a checkpoint (``resume``) keeps its own model in the median: after a short outage it is near the
        neighbours' and changes little; after a long one the network moved on, and training from the stale
        model would publish versions its neighbours score as outliers and evict.
        """
        good: list[FloatVec] = []
        for peer, data in snapshots.items():
            opened = self._open_snapshot(data, peer)
            if isinstance(opened, str):
                self._reject(opened, peer)
                continue
            h = opened[0].header
            rep = self.replicas.get(peer)
            if rep is None or rep.seq < h.seq:  # never regress a replica that deltas already moved on
                self.replicas[peer] = Replica(peer, opened[1], h.seq, h.result, now, h.meta)
            good.append(opened[1])
        if len(good) >= self.config.join_quorum:
            self.own = median(np.stack([self.own, *good] if resume else good))
        return len(good)

    # ----------------------------------------------------------------------------------- serving

    def _remember_payload(self, digest: bytes, payload: bytes) -> None:
        self._payloads[digest] = payload
        self._payloads.move_to_end(digest)
        while len(self._payloads) > self.config.payload_cache:
            self._payloads.popitem(last=False)

    def serve_payload(self, digest: bytes) -> bytes | None:
        """A payload we published or applied, by digest (for peers fetching large deltas)."""
        return self._payloads.get(digest)

    def serve_snapshot(self, now_ms: int) -> bytes:
        """A signed snapshot of our public model at its current version."""
        if self._snapshot_cache is None:
            tensors = self.layout.unflatten(self.public)
            parts, pdigest, psize = payload_parts(tensors)
            header = Header(
                kind="snapshot",
                network_id=self.config.network_id,
                sender=self.peer_id,
                seq=self.seq,
                base=ZERO_DIGEST,
                result=self.public_digest,
                arch=self.layout.arch,
                payload_digest=pdigest,
                payload_size=psize,
                codec="raw",
                timestamp_ms=now_ms,
            )
            self._snapshot_cache = seal(self.identity, header, parts)
        return self._snapshot_cache

    # ------------------------------------------------------------------------------------ rounds

    def mixing_candidates(self, now: float) -> list[Replica]:
        """Fresh, non-evicted replicas that may enter this round's mix (sorted by peer id: deterministic)."""
        out = []
        for peer in sorted(self.replicas):
            rep = self.replicas[peer]
            if now - rep.updated_at > self.config.max_staleness_s or self.is_evicted(peer):
                continue
            if self.mix_filter is not None and not self.mix_filter(peer):
                continue
            out.append(rep)
        return out

    def finish_round(
        self,
        trained: Mapping[str, npt.NDArray[Any]],
        now: float,
        *,
        meta: Meta | None = None,
        timestamp_ms: int = 0,
        val_losses: Mapping[str, float] | None = None,
        own_val_loss: float | None = None,
        candidates: Sequence[Replica] | None = None,
    ) -> RoundOutcome:
        """Publish the freshly trained model, then mix it with the replicas and score them.

        ``trained`` is the own model after local training, which started from :meth:`own_params`. It becomes
        the new public version as it is (others mix *trained* models, so every peer's step reaches the
        network in full); the own model becomes the robust mix, and the next round trains from it. Mixing
        trained with not-yet-trained models instead would divide the learning speed by the number of peers.
        The engine's state moves to the new version at once; persist it before broadcasting.
        """
        before = self.own
        after = self.layout.flatten(trained)
        publish = self._publish(after, meta or Meta(), timestamp_ms)
        reps = list(candidates) if candidates is not None else self.mixing_candidates(now)
        peers = [r.peer for r in reps]
        stack = np.stack([r.vec for r in reps]) if reps else np.empty((0, self.layout.size), np.float32)
        weights = self.scorer.weights_for(peers) if self.scorer is not None else None
        centre = aggregate(self.aggregation, after, stack, weights)
        scores: dict[str, ScoreRecord] = {}
        evicted: list[str] = []
        actions: list[Action] = []
        if self.scorer is not None and reps:
            was_evicted = self.scorer.evicted()
            reference = centre
            if self.scorer.config.reference == "median":
                # the mix may be a plain mean that the very models under test dragged off: score them
                # against a reference they cannot move while they are a minority
                reference = median(np.vstack([after[None, :], stack]))
            fresh = {r.peer for r in reps if self._scored_version(r.peer) != r.version}
            gap = self.scorer.config.return_gap_rounds
            for peer in sorted(fresh):
                # self.seq already counts this round's version
                if self.seq - self._heard_at.get(peer, 1) > gap:
                    self.scorer.grant_grace(peer)
                self._heard_at[peer] = self.seq
            scores = self.scorer.evaluate(
                before,
                after,
                {r.peer: r.vec for r in reps},
                reference,
                val_losses,
                own_val_loss,
                only=fresh,
            )
            for r in reps:
                if r.peer in scores:
                    self._last_scored[r.peer] = (r.version, scores[r.peer].combined)
            if weights is not None and self.scorer.config.drop_bad_at_once:
                # A model scored bad leaves the mix at once, for as long as it is the peer's current version:
                # waiting for its reputation to fall (two scores at the defaults) let a fresh sign-flipper
                # wreck a plain mean first.
                # (every candidate's current version has a score by now: scored this round or before)
                bad = self.scorer.config.bad_score
                last = self._last_scored
                drop = [i for i, r in enumerate(reps) if weights[i] > 0 and last[r.peer][1] < bad]
                if drop:
                    weights = weights.copy()
                    weights[drop] = 0.0
                    centre = aggregate(self.aggregation, after, stack, weights)
            for peer in sorted(self.scorer.evicted() - was_evicted):
                evicted.append(peer)
                self.replicas.pop(peer, None)
                self._last_scored.pop(peer, None)
                self._ban(peer, now)
                actions.append(Evict(peer, _evidence(scores[peer]) if peer in scores else "evicted"))
        scorer = self.scorer
        contributions = [
            Contribution(
                peer=r.peer,
                seq=r.seq,
                weight=float(weights[i]) if weights is not None else 1.0,
                score=scores[r.peer].combined if r.peer in scores else None,
                reputation=scorer.reputation(r.peer) if scorer is not None else 1.0,
                status=scorer.status(r.peer) if scorer is not None else "active",
            )
            for i, r in enumerate(reps)
        ]
        self.own = centre
        actions.insert(0, publish)
        return RoundOutcome(actions, self.seq, self.public_digest, contributions, scores, evicted)

    def _scored_version(self, peer: str) -> tuple[int, bytes] | None:
        last = self._last_scored.get(peer)
        return None if last is None else last[0]

    def _publish(self, model: FloatVec, meta: Meta, timestamp_ms: int) -> Publish:
        delta_vec = model - self.public
        new_public = self.public + delta_vec  # what every receiver computes: bit-identical float32 arithmetic
        tensors = apply_codec(self.layout.unflatten(delta_vec), self.config.codec)
        if self.config.codec != "raw":
            # receivers apply the decoded (lossy) delta: track exactly what they will compute
            decoded = self.layout.flatten(
                undo_codec(tensors, self.config.codec, self.layout.unflatten(delta_vec))
            )
            new_public = self.public + decoded
        parts, pdigest, psize = payload_parts(tensors)
        new_digest = self.layout.digest(new_public)
        header = Header(
            kind="delta",
            network_id=self.config.network_id,
            sender=self.peer_id,
            seq=self.seq + 1,
            base=self.public_digest,
            result=new_digest,
            arch=self.layout.arch,
            payload_digest=pdigest,
            payload_size=psize,
            codec=self.config.codec,
            meta=meta,
            timestamp_ms=timestamp_ms,
        )
        inline = psize <= self.config.inline_limit
        envelope = seal(self.identity, header, parts if inline else None)
        payload = b"".join(parts)
        self._remember_payload(pdigest, payload)
        self.seq += 1
        self.public, self.public_digest = new_public, new_digest
        self._snapshot_cache = None
        return Publish(envelope=envelope, seq=self.seq)

    # ----------------------------------------------------------------------------------- reports

    def status(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "seq": self.seq,
            "replicas": len(self.replicas),
            "applied": self.applied,
            "rejected": dict(self.rejections),
            "evicted": sorted(self.scorer.evicted()) if self.scorer is not None else [],
        }


def _evidence(record: ScoreRecord) -> str:
    """The eviction reason with the last score's components, so a log line says why."""
    cos = "-" if record.cosine is None else f"{record.cosine:.2f}"
    loss = "-" if record.loss_score is None else f"{record.loss_score:.2f}"
    return f"{record.reason} (last: r={record.distance:.2f} cos={cos} loss_score={loss})"
