"""The peer's side of ``[privacy]``: calibrate the noise, privatise what it publishes, keep the budget.

:class:`PeerPrivacy` is built by the peer from its config and learner. It asks the accountant for the noise
multiplier (unless the config gives one), switches the learner to DP-SGD (``record``), and then, each round,
tells the round loop whether one more version fits in the budget (:meth:`may_publish`), what the version's
header claims (:meth:`claim`) and what model to publish (:meth:`to_publish`: the trained model, or for
``peer`` its clipped and noised delta). The number of rounds spent is the peer's public ``seq``
(:mod:`p2pfl.privacy.budget`). Once the budget is spent the peer stops publishing; :meth:`note_exhausted`
logs that once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from p2pfl.errors import ConfigError
from p2pfl.logs import event
from p2pfl.privacy.accountant import Mechanism, calibrate
from p2pfl.privacy.budget import PrivacyBudget
from p2pfl.privacy.config import PrivacyConfig
from p2pfl.privacy.dpsgd import DPSGD, fresh_rng
from p2pfl.privacy.peerdp import privatise_delta
from p2pfl.wire import DPClaim

log = logging.getLogger("p2pfl.peer")
Params = dict[str, npt.NDArray[np.float32]]


@runtime_checkable
class RecordDPLearner(Protocol):
    """A learner that can train with record-level DP-SGD (both shipped learners can)."""

    def dp_sample_rate(self) -> float:
        """The Poisson sampling rate of one DP-SGD step (expected batch size / training records)."""
        ...

    def enable_dp(self, dp: DPSGD | None) -> None:
        """Train with DP-SGD from now on."""
        ...


@functools.lru_cache(maxsize=256)
def calibrated(mechanism: Mechanism, epsilon: float, delta: float, rounds: int, accountant: str) -> float:
    """:func:`p2pfl.privacy.accountant.calibrate`, once per parameter set in a process (a simulation's peers
    with the same data size share it)."""
    return calibrate(mechanism, epsilon, delta, rounds, accountant)


class PeerPrivacy:
    """A peer's differential privacy (``config.mode`` must not be ``off``)."""

    def __init__(
        self,
        config: PrivacyConfig,
        learner: Any,
        local_steps: int,
        *,
        rng: np.random.Generator | None = None,
    ) -> None:
        if not config.enabled:
            raise ConfigError("privacy", "mode", "PeerPrivacy needs 'record' or 'peer'")
        self.config = config
        self._rng = rng if rng is not None else fresh_rng()
        if config.mode == "record":
            if not isinstance(learner, RecordDPLearner):
                raise ConfigError(
                    "privacy",
                    "mode",
                    f"'record' needs a learner with DP-SGD (dp_sample_rate, enable_dp); "
                    f"{type(learner).__name__} has none (use mode = 'peer', or a p2pfl learner)",
                )
            base = Mechanism("record", 1.0, learner.dp_sample_rate(), local_steps)
        else:
            base = Mechanism("peer", 1.0)
        if config.noise_multiplier is not None:
            sigma = float(config.noise_multiplier)
        else:
            assert config.epsilon is not None and config.rounds is not None  # PrivacyConfig checked it
            eps, delta = float(config.epsilon), float(config.delta)
            sigma = calibrated(base, eps, delta, config.rounds, config.accountant)
        self.mechanism = base.with_noise(sigma)
        budget = None if config.epsilon is None else float(config.epsilon)
        self.budget = PrivacyBudget(self.mechanism, float(config.delta), budget, config.accountant)
        if config.mode == "record":
            learner.enable_dp(
                DPSGD(sigma, float(config.clip_norm), self.mechanism.sample_rate, rng=self._rng)
            )
        self._exhausted_noted = False

    @property
    def noise_multiplier(self) -> float:
        return self.mechanism.noise_multiplier

    def spent(self, published: int) -> float:
        """Epsilon spent after ``published`` versions (the peer's ``seq``)."""
        return self.budget.spent(published)

    def may_publish(self, published: int) -> bool:
        """Whether version ``published + 1`` fits in the budget (may take ~0.1 s: call it off the loop)."""
        return self.budget.may_publish(published)

    def claim(self, published: int) -> DPClaim:
        """The header's claim for version ``published + 1``: the epsilon spent once it is out."""
        c = self.config
        return DPClaim(
            mode=c.mode,
            epsilon=self.budget.check_publish(published),
            delta=float(c.delta),
            noise_multiplier=float(self.noise_multiplier),
            clip_norm=float(c.clip_norm),
        )

    def to_publish(
        self, trained: Mapping[str, npt.NDArray[Any]], public: Mapping[str, npt.NDArray[Any]]
    ) -> Params:
        """The model to publish: ``trained`` (record level: DP-SGD made it private), or for peer level the
        public model plus the clipped, noised delta."""
        if self.config.mode == "peer":
            return privatise_delta(
                trained,
                public,
                clip_norm=float(self.config.clip_norm),
                noise_multiplier=self.noise_multiplier,
                rng=self._rng,
            )
        return {k: np.asarray(v, np.float32) for k, v in trained.items()}

    def note_exhausted(self, published: int, peer_id: str) -> str | None:
        """The first time the budget stops a version: log it (once) and return the reason for the version
        log; ``None`` afterwards."""
        if self._exhausted_noted:
            return None
        self._exhausted_noted = True
        spent, c = self.spent(published), self.config
        reason = (
            f"privacy budget spent: epsilon {spent:.4f} of {c.epsilon} at delta {c.delta} after {published} "
            "published versions; this peer stops publishing and keeps learning from its neighbours"
        )
        log.warning(
            "%s",
            reason,
            extra=event(
                "privacy_exhausted",
                peer_id=peer_id,
                epsilon=spent,
                budget=c.epsilon,
                delta=c.delta,
                seq=published,
            ),
        )
        return reason

    def status(self, published: int) -> dict[str, Any]:
        """For ``status.json``: mode, budget, epsilon spent, the noise, whether the budget is spent."""
        c = self.config
        return {
            "mode": c.mode,
            "epsilon_spent": round(self.spent(published), 6),
            "epsilon_budget": c.epsilon,
            "delta": c.delta,
            "noise_multiplier": round(self.noise_multiplier, 6),
            "clip_norm": c.clip_norm,
            "sample_rate": self.mechanism.sample_rate,
            "steps_per_round": self.mechanism.steps,
            "planned_rounds": c.rounds,
            "published": published,
            "exhausted": not self.budget.may_publish(published),
        }
