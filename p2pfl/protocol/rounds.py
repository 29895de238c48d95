"""The engine's round side: mixing candidates, publishing, robust mixing, scoring and eviction."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from p2pfl.aggregation import AggregationConfig, aggregate, median
from p2pfl.protocol.actions import Action, Evict, Publish
from p2pfl.protocol.core import EngineCore
from p2pfl.protocol.layout import FloatVec
from p2pfl.protocol.replicas import Contribution, Replica, RoundOutcome
from p2pfl.scoring import ContributionScorer, ScoreRecord, cap_groups, cap_share
from p2pfl.scoring.copies import share_copies
from p2pfl.scoring.influence import check_group_caps
from p2pfl.wire import ZERO_DIGEST, DPClaim, Header, Meta, apply_codec, payload_parts, seal, undo_codec


class RoundSide(EngineCore):
    """What the engine does at the end of a local round, and the snapshot it serves of its public model."""

    def serve_snapshot(self, now_ms: int) -> bytes:
        """A signed snapshot of our public model at its current version, with that version's meta."""
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
                meta=self.public_meta,
                timestamp_ms=now_ms,
            )
            self._snapshot_cache = seal(self.identity, header, parts)
        return self._snapshot_cache

    # ------------------------------------------------------------------------------------ rounds

    def set_groups(self, groups: Mapping[str, str], caps: Mapping[str, float]) -> None:
        """Peer id -> group (organisation) and group -> the largest share of any mix its peers may hold
        together, own model included in the total (e.g. from a roster). Applied to every later mix: a group
        over its cap is scaled down and the excess goes to the own model. Replaces the previous tables;
        peers without a group and groups without a cap are not limited. Raises ``ConfigError`` on a cap
        outside ``[0, 1]``."""
        self.group_caps = check_group_caps(caps)
        self.groups = dict(groups)

    def mixing_candidates(self, now: float) -> list[Replica]:
        """Fresh, non-evicted replicas that may enter this round's mix (sorted by peer id: deterministic)."""
        out = []
        for peer in sorted(self.replicas):
            rep = self.replicas[peer]
            if now - rep.heard_at > self.config.max_staleness_s or self.is_evicted(peer):
                continue
            if self.mix_filter is not None and not self.mix_filter(peer):
                continue
            out.append(rep)
        return out

    def publish_trained(
        self, trained: Mapping[str, npt.NDArray[Any]], *, meta: Meta | None = None, timestamp_ms: int = 0
    ) -> Publish:
        """Make the freshly trained model the next public version, before mixing (``wait_before_mix``):
        the neighbours get this round's version while we wait for theirs, and :meth:`finish_round` with
        ``already_published=True`` then only mixes. The engine's state moves to the new version at once;
        persist it before broadcasting."""
        return self._publish(self.layout.flatten(trained), meta or Meta(), timestamp_ms)

    def publish_mix(
        self, own: Mapping[str, npt.NDArray[Any]], *, timestamp_ms: int = 0, round_: int = 0
    ) -> Publish:
        """An extra mixing step (p2pfl.protocol.mixing) publishes the own current mix as the next version,
        before it waits for the neighbours' and mixes them with :meth:`finish_round` (``extra_step=True``).
        Its header's meta carries the round only (no samples, no training loss: nothing was trained)."""
        self._extra_versions += 1
        return self._publish(self.layout.flatten(own), Meta(round=round_), timestamp_ms)

    def finish_round(
        self,
        trained: Mapping[str, npt.NDArray[Any]],
        now: float,
        *,
        meta: Meta | None = None,
        timestamp_ms: int = 0,
        val_losses: Mapping[str, float] | None = None,
        own_val_loss: float | None = None,
        val_specialists: Collection[str] = (),
        candidates: Sequence[Replica] | None = None,
        publish: bool = True,
        published: Mapping[str, npt.NDArray[Any]] | None = None,
        dp: DPClaim | None = None,
        already_published: bool = False,
        round_start: Mapping[str, npt.NDArray[Any]] | None = None,
        extra_step: bool = False,
    ) -> RoundOutcome:
        """Publish the freshly trained model, then mix it with the replicas and score them
        (``already_published``: :meth:`publish_trained` already published it; only mix, and the outcome has
        no ``Publish``).

        Differential privacy (p2pfl.privacy) uses the last three: ``published`` replaces ``trained`` as the
        version sent (peer level: its clipped, noised delta; ``trained`` still enters the own mix), ``dp`` is
        the header's privacy claim, and ``publish=False`` (budget spent) publishes nothing: ``seq`` stays, the
        round only mixes.

        ``round_start``: the model the own update is measured from for scoring (default: the own model before
        this call). An extra mixing step (p2pfl.protocol.mixing) passes ``trained = own_params()``, the
        round's start (so the direction signal compares the neighbours' pulls with the round's own update)
        and ``extra_step=True``: the scorer's round clock does not advance (its warm-ups and founding rounds
        count own rounds, not versions).

        ``trained`` is the own model after local training, which started from :meth:`own_params`. It becomes
        the new public version as it is (others mix *trained* models, so every peer's step reaches the
        network in full); the own model becomes the robust mix, and the next round trains from it. Mixing
        trained with not-yet-trained models instead would divide the learning speed by the number of peers.
        The engine's state moves to the new version at once; persist it before broadcasting.

        With scoring, absurd models are dropped first; the reference the others are scored against is the
        robust mix of the own model and the established neighbours only (newcomers and each group capped to
        their shares); then the mix takes every admitted neighbour with its earned weight (the young capped
        together at ``young_share_cap``, all newcomers at ``newcomer_share_cap``), without the ones scored
        bad this round, and with each group's share capped (:meth:`set_groups`).
        """
        before = self.own if round_start is None else self.layout.flatten(round_start)
        after = self.layout.flatten(trained)
        sent = after if published is None else self.layout.flatten(published)
        # dp only when set: wrappers of the 3-argument _publish (protocol attacks) keep working
        claim = () if dp is None else (dp,)
        publish_action = (
            self._publish(sent, meta or Meta(), timestamp_ms, *claim)
            if publish and not already_published
            else None
        )
        self.forget_idle(now)  # (idle replicas are out of every mix: stale long since)
        reps = list(candidates) if candidates is not None else self.mixing_candidates(now)
        peers = [r.peer for r in reps]
        stack = np.stack([r.vec for r in reps]) if reps else np.empty((0, self.layout.size), np.float32)
        scorer = self.scorer
        scores: dict[str, ScoreRecord] = {}
        evicted: list[str] = []
        actions: list[Action] = []
        weights: npt.NDArray[np.float64] | None = None
        own_weight = self.aggregation.own_weight
        if scorer is not None and not extra_step:
            scorer.begin_round()
        if scorer is not None and reps:
            was_evicted = scorer.evicted()
            rejected = scorer.absurd(after, {r.peer: r.vec for r in reps})
            anchors = np.asarray(
                [scorer.is_established(p) and p not in rejected for p in peers], dtype=np.float64
            )
            newcomers = [not scorer.is_founder(p) for p in peers]
            copies = self._copies(scorer, reps, rejected, after - before, extra_step)
            ref_weights, ref_own = cap_share(
                share_copies(peers, scorer.weights_for(peers) * anchors, copies),
                newcomers,
                self.aggregation.own_weight,
                scorer.config.newcomer_share_cap,
            )
            ref_weights, ref_own = cap_groups(peers, ref_weights, ref_own, self.groups, self.group_caps)
            # the yardstick the scores are taken against is not bucketed: a random centre would make them
            # random too (bucketing is for learning, the mix below)
            reference = aggregate(self._unbucketed(), after, stack, ref_weights, own_weight=ref_own)
            if scorer.config.reference == "median":
                # the mix may be a plain mean that the very models under test dragged off: score them
                # against a reference they cannot move while they are a minority
                keep = ref_weights > 0
                reference = median(
                    np.vstack([after[None, :], stack[keep]]), np.concatenate(([ref_own], ref_weights[keep]))
                )
            scores = self._score(
                scorer,
                reps,
                before=before,
                after=after,
                reference=reference,
                val_losses=val_losses,
                own_val_loss=own_val_loss,
                specialists=val_specialists,
                extra_step=extra_step,
            )
            weights = share_copies(peers, self._mix_weights(scorer, reps, rejected), copies)
            young = [not scorer.is_established(p) for p in peers]
            weights, own_weight = cap_share(weights, young, own_weight, scorer.config.young_share_cap)
            weights, own_weight = cap_share(weights, newcomers, own_weight, scorer.config.newcomer_share_cap)
            weights, own_weight = cap_groups(peers, weights, own_weight, self.groups, self.group_caps)
            if (
                scorer.config.reference == "aggregate"
                and self.aggregation.bucket == 1
                and own_weight == ref_own
                and np.array_equal(weights, ref_weights)
            ):
                centre = reference  # the mix is the reference: nothing young, dropped or capped
            else:
                centre = aggregate(
                    self.aggregation, after, stack, weights, own_weight=own_weight, rng=self.bucket_rng
                )
            evicted, actions = self._evict(sorted(scorer.evicted() - was_evicted), scores, now)
        elif reps and self.group_caps:
            weights, own_weight = cap_groups(
                peers, np.ones(len(reps)), self.aggregation.own_weight, self.groups, self.group_caps
            )
            centre = aggregate(
                self.aggregation, after, stack, weights, own_weight=own_weight, rng=self.bucket_rng
            )
        else:
            centre = aggregate(self.aggregation, after, stack, rng=self.bucket_rng)
        contributions = self._contributions(reps, weights, scores)
        self.own = centre
        if publish_action is not None:
            actions.insert(0, publish_action)
        return RoundOutcome(
            actions, self.seq, self.public_digest, contributions, scores, evicted, own_weight=own_weight
        )

    def _unbucketed(self) -> AggregationConfig:
        """The aggregation config without bucketing (the scoring reference's)."""
        cfg = self.aggregation
        return cfg if cfg.bucket == 1 else replace(cfg, bucket=1)

    @staticmethod
    def _copies(
        scorer: ContributionScorer,
        reps: Sequence[Replica],
        rejected: Mapping[str, float],
        own_update: FloatVec,
        extra_step: bool,
    ) -> dict[str, str]:
        """The candidates' groups of copies when a group is to weigh once in the mix (``copies_mix_once``),
        else none: the scorer's own grouping (``ScoringSteps.copies``), of the same sane models."""
        if not scorer.config.copies_mix_once:
            return {}
        sane = {r.peer: r.vec.astype(np.float64) for r in reps if r.peer not in rejected}
        return scorer.copies(sane, float(np.linalg.norm(own_update)), extra_step=extra_step)

    def _score(
        self,
        scorer: ContributionScorer,
        reps: Sequence[Replica],
        *,
        before: FloatVec,
        after: FloatVec,
        reference: FloatVec,
        val_losses: Mapping[str, float] | None,
        own_val_loss: float | None,
        specialists: Collection[str] = (),
        extra_step: bool = False,
    ) -> dict[str, ScoreRecord]:
        """Score each candidate's version not scored yet (each version once) and remember the scores."""
        fresh = {r.peer for r in reps if self._scored_version(r.peer) != r.version}
        gap = scorer.config.return_gap_rounds
        rounds = self.seq - self._extra_versions  # own rounds that published (extra steps' versions aside)
        for peer in sorted(fresh):
            self._contacts.pop(peer, None)  # published: its replica keeps it live now (note_contacts)
            # rounds already counts this round's version
            if rounds - self._heard_at.get(peer, 1) > gap:
                scorer.grant_grace(peer)
            self._heard_at[peer] = rounds
        scores = scorer.evaluate(
            before,
            after,
            {r.peer: r.vec for r in reps},
            reference,
            val_losses,
            own_val_loss,
            only=fresh,
            extra_step=extra_step,
            specialists=specialists,
        )
        for r in reps:
            if r.peer in scores:
                self._last_scored[r.peer] = (r.version, scores[r.peer].for_mix)
                if scorer.doubted(scores[r.peer]):
                    self._doubted.add(r.peer)
                else:
                    self._doubted.discard(r.peer)
        return scores

    def _mix_weights(
        self, scorer: ContributionScorer, reps: Sequence[Replica], rejected: Collection[str]
    ) -> npt.NDArray[np.float64]:
        """Each candidate's weight after this round's scores: its earned weight (0 unless admitted; young
        ones capped by their ramp), and 0 for a model scored bad, or below ``drop_below`` with doubtful hard
        evidence (``ContributionScorer.doubted``) (``drop_bad_at_once``: it leaves the very mix it was
        scored against, for as long as it is the peer's current version; waiting for its reputation to fall
        let a fresh sign-flipper wreck a plain mean first) or absurd."""
        weights = scorer.weights_for([r.peer for r in reps])
        weights[[i for i, r in enumerate(reps) if r.peer in rejected]] = 0.0
        if scorer.config.drop_bad_at_once:
            # (every candidate's current version has a score by now: scored this round or before)
            bad = scorer.config.bad_score
            last = self._last_scored
            for i, r in enumerate(reps):
                if r.peer in self._doubted or (r.peer in last and last[r.peer][1] < bad):
                    weights[i] = 0.0
        return weights

    def _evict(
        self, peers: Sequence[str], scores: Mapping[str, ScoreRecord], now: float
    ) -> tuple[list[str], list[Action]]:
        """Forget and ban the peers the scorer just evicted; one ``Evict`` each, with the evidence."""
        actions: list[Action] = []
        for peer in peers:
            self.replicas.pop(peer, None)
            self._last_scored.pop(peer, None)
            self._doubted.discard(peer)
            self._ban(peer, now)
            actions.append(Evict(peer, _evidence(scores[peer]) if peer in scores else "evicted"))
        return list(peers), actions

    def _contributions(
        self,
        reps: Sequence[Replica],
        weights: npt.NDArray[np.float64] | None,
        scores: Mapping[str, ScoreRecord],
    ) -> list[Contribution]:
        scorer = self.scorer
        return [
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

    def _scored_version(self, peer: str) -> tuple[int, bytes] | None:
        last = self._last_scored.get(peer)
        return None if last is None else last[0]

    def _publish(self, model: FloatVec, meta: Meta, timestamp_ms: int, dp: DPClaim | None = None) -> Publish:
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
            dp=dp,
        )
        inline = psize <= self.config.inline_limit
        envelope = seal(self.identity, header, parts if inline else None)
        payload = b"".join(parts)
        self._remember_payload(pdigest, payload)
        self.seq += 1
        self.public, self.public_digest = new_public, new_digest
        self.public_meta = meta
        self._snapshot_cache = None
        return Publish(envelope=envelope, seq=self.seq)


def _evidence(record: ScoreRecord) -> str:
    """The eviction reason with the last score's components, so a log line says why."""
    cos = "-" if record.cosine is None else f"{record.cosine:.2f}"
    loss = "-" if record.loss_score is None else f"{record.loss_score:.2f}"
    return f"{record.reason} (last: r={record.distance:.2f} cos={cos} loss_score={loss})"
