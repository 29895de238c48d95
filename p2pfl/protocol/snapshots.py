"""The engine's snapshots: asking for them, applying one, and the join from several.

Split out of :mod:`p2pfl.protocol.receive` because a snapshot replaces a replica wholesale, where a delta
moves it one checked step: it is asked for (a gap, a digest mismatch, a pacing pull), opened against the one
sender it was asked of, and never regresses a replica; the join adopts the median of several, so it alone
needs the guard against absurd models before any scorer has seen them. Deltas that arrive while a snapshot is
on its way are buffered by the receive side and drained after it (``_drain``). The envelope is opened and the
tensors decoded by the receive side's ``_open`` and ``_decode_model``, the only callers of the wire decoders.
:class:`SnapshotSide` is a base of :class:`~p2pfl.protocol.receive.ReceiveSide`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from p2pfl.aggregation import median
from p2pfl.protocol.actions import Action, RequestSnapshot
from p2pfl.protocol.layout import FloatVec
from p2pfl.protocol.proofs import ProofSide
from p2pfl.protocol.replicas import Replica
from p2pfl.scoring import ScoringConfig
from p2pfl.wire import Envelope, Header


class SnapshotSide(ProofSide):
    """What the engine does with snapshots (never raises, whatever the bytes)."""

    if TYPE_CHECKING:  # the receive side's (p2pfl.protocol.receive.ReceiveSide)

        def _open(
            self, data: bytes | memoryview, peer: str | None, *, expected_sender: str | None = None
        ) -> Envelope | str: ...

        def _decode_model(self, h: Header, payload: memoryview | bytes) -> FloatVec | str: ...

        def _drain(self, peer: str, now: float) -> list[Action]: ...

    def request_snapshots(self, peers: Iterable[str], now: float) -> list[Action]:
        """Ask each of ``peers`` (not evicted) for a snapshot of its current model, at most once per
        ``snapshot_retry_s`` each: a round waiting for versions that gossip did not deliver pulls them
        (``wait_before_mix``; see p2pfl.protocol.pacing)."""
        asked = [p for p in peers if not self.is_evicted(p)]
        self._pulled.update(dict.fromkeys(asked, now))
        return [a for p in asked for a in self._want_snapshot(p, p, now)]

    def renewals(self, learners: Iterable[str], now: float, *, missing: bool = False) -> list[Action]:
        """Ask each of ``learners`` (connected, not evicted) whose version we last heard of more than half
        ``max_staleness_s`` ago for a snapshot; with ``missing``, also those we hold no replica of. Each
        neighbour is asked at most once per half ``max_staleness_s``, whatever became of the last ask (an
        answer we refuse: an older version after the signer lost its later ones, a bad signature), and
        not again while an ask is unanswered for ``snapshot_retry_s``: a refused answer costs one request
        per period, never one per wait's recheck, and at the defaults (60 s against a 30 s request
        timeout) at most one request per neighbour is in flight.

        Why. Staleness counted from a version's arrival, so a neighbour that finished its rounds and only
        serves (``p2pfl peer`` after ``rounds``) left our mix ``max_staleness_s`` after its last version
        although it is connected and serves that model, and a peer paused by ``solo_rounds`` among such
        neighbours waited for ever (p2pfl.protocol.solo). The signer's answer, over an authenticated stream
        we opened, of the version we hold confirms it (:meth:`handle_snapshot`); a newer one is applied
        (gossip lost it). ``missing``: a resumed peer's first wait and a paused peer ask the neighbours
        they never heard from (a snapshot the join missed, or a restart without a join), whose version 0
        (nothing published yet) is not taken for a replica. What an attacker gains: nothing it cannot have
        by publishing; no third party can answer (only the signer serves its snapshot), and replays of
        gossip confirm nothing."""
        half, retry = self.config.max_staleness_s / 2, self.config.snapshot_retry_s
        out: list[Action] = []
        for p in learners:
            rep = self.replicas.get(p)
            if self.is_evicted(p) or (rep is not None and now - rep.heard_at <= half):
                continue
            if rep is None and not missing:
                continue
            if now - self._renewal_asked.get(p, -math.inf) < half:
                continue  # asked within the period: answered, refused or silent, it was one request
            if now - self._snapshot_wanted.get(p, -math.inf) < retry:
                continue  # unanswered yet (asked by us or another caller): still on its way
            self._renewal_asked[p] = now
            out += self._want_snapshot(p, p, now)
        return out

    def _want_snapshot(self, peer: str, via: str, now: float) -> list[Action]:
        self.snapshot_requests += 1
        asked = self._snapshot_wanted.get(peer)
        if asked is not None and now - asked < self.config.snapshot_retry_s:
            return []
        self._snapshot_wanted[peer] = now
        return [RequestSnapshot(peer=peer, via=via)]

    def snapshot_failed(self, peer: str, reason: str) -> list[Action]:
        """A snapshot request failed: count it (the retry interval still applies)."""
        return self._reject(f"snapshot_{reason}", peer)

    def handle_snapshot(self, data: bytes, expected_sender: str, now: float) -> list[Action]:
        """A snapshot of ``expected_sender``'s public model arrived (signed by that peer)."""
        asked = self._snapshot_wanted.pop(expected_sender, None) is not None
        pulled = self._pulled.pop(expected_sender, None) is not None
        env = self._open_snapshot(data, expected_sender)
        if isinstance(env, str):
            return self._reject(env, expected_sender)
        h = env[0].header
        convicted = self._observe(env[0], now)
        if convicted is not None:  # two different models signed as the same version
            return convicted
        rep = self.replicas.get(h.sender)
        if rep is not None and h.seq < rep.seq:
            return self._reject("stale_snapshot", h.sender)
        floor = self.forgotten.floor(h.sender)
        # no older than a forgotten replica, nor as old unless its signer answers our request: the floor
        # stops replays, and a finished neighbour forgotten while we did not ask serves that version still
        if rep is None and (h.seq < floor or (h.seq == floor and not asked)):
            return self._reject("stale_snapshot", h.sender)
        if rep is not None and h.seq == rep.seq:
            if h.result != rep.digest:  # the same, when the delta's header was not kept (e.g. old)
                return self._reject("equivocation", h.sender)
            if asked:  # its signer stands by it now (renewals); still no news for the pacing
                rep.confirmed_at = now
            return self._drain(h.sender, now)
        if rep is None and h.seq == 0 and (pulled or h.sender in self._renewal_asked):
            # a neighbour asked by renewals or by a round's pull (``wait_before_mix``) that has published
            # nothing yet: its initial model is no version of it, to mix or to wait on (no replica)
            return []
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

    def _absurd_snapshots(self, models: Mapping[str, FloatVec]) -> set[str]:
        """The snapshots no honest peer could serve: non-finite, or ``hard_reject_factor`` squared times
        farther from the own model than the larger of its norm and the lower median of the snapshots'
        distances (the yardstick of :func:`p2pfl.scoring.influence.absurd`; the lower median, so one far
        model of two cannot set it). They must not enter the join's median: of two snapshots the median is
        their mean, so one model near -1e38 would replace the own model."""
        own = np.asarray(self.own, dtype=np.float64)
        dist = {p: float(np.linalg.norm(np.asarray(m, dtype=np.float64) - own)) for p, m in models.items()}
        bad = {p for p, d in dist.items() if not math.isfinite(d)}
        # with scoring off too: a join adopts what it is given wholesale, so the guard is not the scorer's
        factor = (self.scorer.config if self.scorer is not None else ScoringConfig()).hard_reject_factor
        finite = sorted(d for d in dist.values() if math.isfinite(d))
        if factor is None or not finite:
            return bad
        scale = max(float(np.linalg.norm(own)), finite[(len(finite) - 1) // 2])
        # squared: a join compares snapshots with each other, not with established neighbours, so only what is
        # orders of magnitude off is refused here; the scorer judges the rest in the rounds that follow
        limit = factor * factor * scale
        return bad | {p for p, d in dist.items() if math.isfinite(d) and scale > 0 and d > limit}

    def usable_snapshots(self, snapshots: Mapping[str, bytes]) -> set[str]:
        """The peers whose snapshot :meth:`join_from_snapshots` would use, found without a side effect (no
        rejection counted, no header recorded, no replica seeded; the join counts its rejections once).
        Only these count towards the join's quorum (p2pfl.protocol.join): a learner whose snapshot is refused
        (wrong_arch, a bad signature, absurd) answered, yet must not end the join before a learner whose
        request was lost is asked again. A snapshot that would convict its sender passes here; the join
        refuses it (two models signed as one version: rare, and the sender is evicted)."""
        opened: dict[str, FloatVec] = {}
        for peer, data in snapshots.items():
            env = self._open_snapshot(data, peer)
            if not isinstance(env, str):
                opened[peer] = env[1]
        return set(opened) - self._absurd_snapshots(opened)

    def join_from_snapshots(self, snapshots: Mapping[str, bytes], now: float, *, resume: bool = False) -> int:
        """Start from the robust (median) aggregate of several neighbours' snapshots, never one peer's word.

        Returns how many snapshots were usable; the own model changes only if at least ``join_quorum`` were.
        A snapshot that contradicts a header seen before convicts its sender: the Evict and the proof are
        kept for :meth:`take_actions`. The snapshots also seed the replicas, so deltas from those peers
        apply at once. A peer resuming from
        a checkpoint (``resume``) keeps its own model in the median: after a short outage it is near the
        neighbours' and changes little; after a long one the network moved on, and training from the stale
        model would publish versions its neighbours score as outliers and evict.
        """
        good: list[FloatVec] = []
        opened_ok: dict[str, tuple[Envelope, FloatVec]] = {}
        for peer, data in snapshots.items():
            opened = self._open_snapshot(data, peer)
            if isinstance(opened, str):
                self._reject(opened, peer)
                continue
            convicted = self._observe(opened[0], now)
            if convicted is not None:
                self._deferred += convicted  # its Evict and proof, for the caller (take_actions)
                continue
            opened_ok[peer] = opened
        absurd = self._absurd_snapshots({p: o[1] for p, o in opened_ok.items()})
        for peer, (env, params) in opened_ok.items():
            if peer in absurd:
                self._reject("absurd_snapshot", peer)
                continue
            h = env.header
            rep = self.replicas.get(peer)
            if rep is None or rep.seq < h.seq:  # never regress a replica that deltas already moved on
                self.replicas[peer] = Replica(peer, params, h.seq, h.result, now, h.meta)
            good.append(params)
        if len(good) >= self.config.join_quorum:
            self.own = median(np.stack([self.own, *good] if resume else good))
        return len(good)
