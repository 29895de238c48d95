"""The engine's state and bookkeeping, shared by its receive side and its round side.

:class:`EngineCore` holds a peer's learning state (own model, public model and its version, replicas,
rejection counters, faults, the payload cache) and the small operations both sides use; the
:class:`~p2pfl.protocol.engine.GossipEngine` composes it with :mod:`p2pfl.protocol.receive` and
:mod:`p2pfl.protocol.rounds`.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from p2pfl.aggregation import AggregationConfig
from p2pfl.errors import ConfigError
from p2pfl.identity import Identity
from p2pfl.protocol.actions import INTERNAL_ERROR, Action, Fault, Forget, Readmit
from p2pfl.protocol.bans import BanBook, BanEntry
from p2pfl.protocol.churn import QuietBook, count_rejection, prune_identities
from p2pfl.protocol.config import ProtocolConfig
from p2pfl.protocol.equivocation import HeaderBook, ProofBook
from p2pfl.protocol.idle import FORGET_STALENESS_FACTOR, ForgottenBook, idle_peers
from p2pfl.protocol.layout import FloatVec, Layout, Params
from p2pfl.protocol.ratelimit import RateConfig, RateGate
from p2pfl.protocol.replicas import Replica
from p2pfl.scoring import ContributionScorer, ScoringConfig
from p2pfl.wire import Envelope, Header, Meta, PayloadSizes

PENDING_PER_PEER = 16
#: validated envelopes kept for their delivery (see GossipEngine.accept_gossip): at most this many, each of
#: at most this size (a delta announcement with its payload inline; larger payloads are fetched)
_VALIDATED_MAX = 64
_VALIDATED_MAX_BYTES = 1 << 20
#: faults kept until the caller takes them (see GossipEngine.take_faults); older ones are dropped
_FAULTS_MAX = 64


class EngineCore:
    """One peer's protocol state. Not thread-safe: drive it from one task."""

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
        rates: RateConfig | None = None,
    ) -> None:
        self.identity = identity
        self.config = config
        self.layout = Layout.of(initial)
        self.aggregation = aggregation or AggregationConfig()
        #: draws the mix's buckets (``AggregationConfig.bucket``): keyed by the identity's secret, so no
        #: neighbour can predict whom it shares a bucket with, and reproducible from it
        self.bucket_rng = np.random.default_rng(int.from_bytes(identity.secret_for(b"p2pfl-buckets")))
        self.scorer = ContributionScorer(scoring) if scoring_enabled else None
        self.allowed = allowed
        self.mix_filter = mix_filter
        self.own: FloatVec = self.layout.flatten(initial)
        self.public: FloatVec = self.own.copy()
        self.public_digest = self.layout.digest(self.public)
        #: the model this engine started from: a neighbour's first delta from the same model needs no snapshot
        self._initial_vec: FloatVec = self.own.copy()
        self._initial_digest = self.public_digest
        self.seq = 0
        self.replicas: dict[str, Replica] = {}
        #: the last versions of replicas forgotten for idleness: the floor of their replays (forget_idle)
        self.forgotten = ForgottenBook()
        #: identities gone quiet whose record is worse than a new one's (p2pfl.protocol.churn; bounded)
        self.quiet = QuietBook()
        self.rejections: Counter[str] = Counter()
        #: the most recently rejected identities' counts (bounded: p2pfl.protocol.churn.MAX_REJECTING)
        self.rejections_by_peer: dict[str, Counter[str]] = {}
        self.applied = 0
        self.duplicates = 0
        self.ignored = 0
        self.snapshot_requests = 0
        self._payloads: OrderedDict[bytes, bytes] = OrderedDict()
        self._snapshot_wanted: dict[str, float] = {}
        #: neighbours asked by renewals (p2pfl.protocol.snapshots): when; one ask each per half
        #: ``max_staleness_s``, answered, refused or silent
        self._renewal_asked: dict[str, float] = {}
        #: neighbours asked by a round's pull (``wait_before_mix``; request_snapshots), until they answer
        self._pulled: dict[str, float] = {}
        self._fetching: dict[bytes, float] = {}
        self._snapshot_cache: bytes | None = None
        #: the sender-reported facts of our public version: our snapshots carry them too, so a peer that
        #: joins from one knows our round (a neighbour ahead is not waited for: p2pfl.protocol.pacing)
        self.public_meta = Meta()
        zeros = self.layout.unflatten(np.zeros(self.layout.size, np.float32))
        self._payload_sizes = PayloadSizes(zeros)
        # deltas that arrived while a snapshot of their sender was on its way: applied after it, in order
        self._pending: dict[str, dict[int, tuple[Header, bytes]]] = {}
        #: evicted peers and when their evictions expire
        self.bans = BanBook(config.readmit_after_s)
        #: signed headers seen per sender, proofs verified and relayed (see p2pfl.protocol.equivocation)
        self.headers = HeaderBook()
        self.proofs = ProofBook()
        #: per-relay and per-sender token buckets checked before a signature is verified
        self.rates = RateGate(rates)
        #: per sender, the version whose payload is being fetched and since when (one fetch in flight each)
        self._fetching_for: dict[str, tuple[int, float]] = {}
        #: actions of calls that return something else (a conviction while joining from snapshots: its
        #: Evict and proof), kept until the caller takes them (see take_actions)
        self._deferred: list[Action] = []
        #: per peer, the replica version (seq, digest) last scored and its combined score: each version is
        #: scored once. Rescoring an unchanged replica every own round made a neighbour that is slower than
        #: us, or just restarted from an old checkpoint, collect "consecutive" bad scores for one stale model
        #: (measured: a restarted peer evicted by both neighbours within 1 s, before it published again).
        self._last_scored: dict[str, tuple[tuple[int, bytes], float]] = {}
        #: peers whose current version scored below ``drop_below`` with doubtful hard evidence (rounds.py)
        self._doubted: set[str] = set()
        #: per peer, our own seq when we last scored a new version of it (to tell a peer coming back)
        self._heard_at: dict[str, int] = {}
        #: identities the scorer made founders by contact (note_contacts) that have not published yet, with
        #: when they were first in contact: live until their first version is scored (then their replica
        #: keeps them live) or for the forgetting horizon from that contact (churn), so a silent founder
        #: is forgotten on the clock a silent sleeper is
        self._contacts: dict[str, float] = {}
        #: versions published by extra mixing steps (p2pfl.protocol.mixing): ``seq`` minus these counts the
        #: own rounds that published, the clock of ``return_gap_rounds``
        self._extra_versions = 0
        #: envelopes the gossip validator opened, by their bytes, until handle_announce takes them: each
        #: message's signature is checked once, not twice. Small messages only, few of them (a message
        #: validated but never delivered ages out).
        #: The inline delta the validator decoded rides along, so it is decoded once too.
        self._validated: OrderedDict[bytes, tuple[Envelope, FloatVec | None]] = OrderedDict()
        #: peer -> group and group -> largest share of a mix (see RoundSide.set_groups)
        self.groups: dict[str, str] = {}
        self.group_caps: dict[str, float] = {}
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
        """Evicted by the scorer, or convicted (e.g. of equivocation) by proof."""
        if self.bans.convicted(peer) is not None:
            return True
        return self.scorer is not None and self.scorer.is_evicted(peer)

    def evicted_peers(self) -> set[str]:
        """Peers evicted by the scorer or convicted by proof (what status reports as ``evicted``)."""
        scored = self.scorer.evicted() if self.scorer is not None else set()
        return scored | self.bans.convicted_peers()

    def _ban(self, peer: str, now: float) -> None:
        self.bans.ban(peer, now)

    def evictions_of(self, peer: str) -> int:
        """How many times ``peer`` was evicted (each readmission that ends badly adds one)."""
        return self.bans.evictions_of(peer)

    def ban_snapshot(self, now: float) -> tuple[BanEntry, ...]:
        """The ban records a checkpoint keeps (:meth:`BanBook.snapshot`)."""
        return self.bans.snapshot(now)

    def restore_bans(self, entries: tuple[BanEntry, ...], now: float) -> list[str]:
        """Take a checkpoint's ban records back at ``now``: the peers whose ban still runs are evicted again
        in the scorer (convictions need no scorer); returns them, for the transport's block list."""
        banned = self.bans.restore(entries, now)
        if self.scorer is not None:
            for peer in banned:
                if self.bans.convicted(peer) is None:
                    self.scorer.restore_eviction(peer)
        return banned

    def readmissions(self, now: float) -> list[Readmit | Forget]:
        """Readmit every peer whose eviction expired at ``now`` (on probation: scored, not mixed, until
        ``probation_length`` scores without eviction evidence; one that counts towards eviction evicts it
        again, for twice as long).

        A false eviction (an honest peer restarted from an old checkpoint, or drifting on very skewed data) is
        not forever, and a poisoner costs one scored, unmixed model per expiry. Banned peers forgotten since
        the last call (:mod:`p2pfl.protocol.churn`) come with a :class:`Forget`, for the transport."""
        return self.bans.readmissions(now, self.scorer)

    def forget_idle(self, now: float) -> list[str]:
        """Forget the replicas not moved on for ``forget_after_s`` at ``now`` (see :mod:`p2pfl.protocol.
        idle`), keeping their versions as replay floors, then the other per-identity state of identities no
        longer live (:mod:`p2pfl.protocol.churn`); returns the peers whose replicas were forgotten. Called
        every round, and periodically while a finished peer only serves (:mod:`p2pfl.peer_serve`)."""
        horizon = self.config.forget_after_s
        if horizon is None:
            horizon = FORGET_STALENESS_FACTOR * self.config.max_staleness_s
        gone = idle_peers(self.replicas, now, horizon)
        self.forgotten.remember((p, self.replicas[p].seq) for p in gone)
        for peer in gone:
            del self.replicas[peer]
            self._pending.pop(peer, None)
            self._fetching_for.pop(peer, None)
            self._snapshot_wanted.pop(peer, None)
            self._last_scored.pop(peer, None)
            self._doubted.discard(peer)
        prune_identities(self, now)
        return gone

    # ------------------------------------------------------------------------------------ restore

    def restore(
        self,
        own: Mapping[str, npt.NDArray[Any]],
        public: Mapping[str, npt.NDArray[Any]],
        seq: int,
        meta: Meta | None = None,
    ) -> None:
        """Resume from a checkpoint (own model, last published public model, its version and what is known
        of its facts, e.g. the round)."""
        if self.layout.matches(own) or self.layout.matches(public):
            raise ConfigError("checkpoint does not match the model's architecture")
        self.own = self.layout.flatten(own)
        self.public = self.layout.flatten(public)
        self.public_digest = self.layout.digest(self.public)
        self.seq = seq
        self.public_meta = meta or Meta()
        self._snapshot_cache = None

    def set_own(self, params: Mapping[str, npt.NDArray[Any]]) -> None:
        """Replace the own model (e.g. a rollback); the public model changes at the next round."""
        self.own = self.layout.flatten(params)

    # -------------------------------------------------------------------------------- rejections

    def note_contacts(self, peers: Iterable[str], now: float) -> None:
        """The caller is in contact with ``peers`` now: connected and subscribed to our versions (the
        peer's learners, told as each round starts). Within the founding rounds the scorer makes each new
        one a founder before its first version arrives (:meth:`~p2pfl.scoring.scorer.ContributionScorer.
        contact`). The record stays live until that first version is scored, or for the forgetting horizon
        from the first contact: staying connected does not keep a silent identity's standing for ever
        (p2pfl.protocol.churn forgets it then, as it forgets a founder silent that long)."""
        scorer = self.scorer
        if scorer is None:
            return
        for peer in peers:
            if peer not in self._contacts and scorer.contact(peer):
                self._contacts[peer] = now

    def _reject(self, reason: str, peer: str | None) -> list[Action]:
        self.rejections[reason] += 1
        if peer is not None:
            count_rejection(self.rejections_by_peer, peer, reason)
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

    def take_actions(self) -> list[Action]:
        """Actions produced by a call that returns something else (``join_from_snapshots``), oldest first,
        for the caller to carry out (an Evict disconnects a convicted sender at once)."""
        out = list(self._deferred)
        self._deferred.clear()
        return out

    # ----------------------------------------------------------------------------------- serving

    def _remember_payload(self, digest: bytes, payload: bytes) -> None:
        self._payloads[digest] = payload
        self._payloads.move_to_end(digest)
        while len(self._payloads) > self.config.payload_cache:
            self._payloads.popitem(last=False)

    def serve_payload(self, digest: bytes) -> bytes | None:
        """A payload we published or applied, by digest (for peers fetching large deltas)."""
        return self._payloads.get(digest)
