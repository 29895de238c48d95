"""The own-data guards of a round: divergence, the mix guard and the rollback guard. Pure: no I/O, no clock.

After local training and mixing, a peer checks what it is about to keep against its own validation split,
the one thing no neighbour can fake:

1. a trained model with a non-finite parameter is discarded (:func:`check_trained`);
2. the *mix guard* refuses a mix that loses more than ``mix_guard_margin`` of the trained model's
   validation accuracy: the round keeps the trained model;
3. the *rollback guard* then watches the accuracy of the model in effect (the mix, or the trained model if
   the mix was refused) and reverts to the best recent one when it falls more than ``rollback_margin``
   below it.

The guard observes the parameters that are actually in effect: a refused mix is never remembered, so no
later rollback can restore it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

Params = dict[str, npt.NDArray[np.float32]]


class Evaluation(Protocol):
    """A model's loss and accuracy on the own validation split (``p2pfl.learner.EvalResult`` is one)."""

    @property
    def loss(self) -> float: ...

    @property
    def accuracy(self) -> float | None: ...


E = TypeVar("E", bound=Evaluation)


@dataclass
class RollbackGuard:
    """Reverts to the best recent version when validation accuracy falls more than ``margin`` below it.

    Keeps the best version of the last ``window`` rounds in memory (a copy of its parameters). Pure logic:
    the peer logs the rollback and writes the checkpoint.
    """

    margin: float = 0.15
    window: int = 10
    warmup: int = 5
    _history: list[tuple[int, float, Params]] = field(default_factory=list)
    _seen: int = 0

    def observe(self, round_: int, accuracy: float, params: Params) -> tuple[int, float, Params] | None:
        """Record this round's accuracy; return (round, accuracy, params) of the version to revert to, if any.

        Nothing is reverted during the first ``warmup`` observations: early mixing of non-IID neighbours moves
        the local validation accuracy a lot without anything being wrong.
        """
        self._seen += 1
        best = max(self._history, key=lambda t: t[1], default=None)
        if self._seen > self.warmup and best is not None and accuracy < best[1] - self.margin:
            return best
        self._history.append((round_, accuracy, {k: np.array(v, copy=True) for k, v in params.items()}))
        self._history = self._history[-self.window :]
        return None


def check_trained(params: Mapping[str, npt.NDArray[np.float32]]) -> bool:
    """True if every trained parameter is finite: a diverged local step must never reach the network."""
    return all(np.isfinite(v).all() for v in params.values())


@dataclass(frozen=True)
class GuardConfig:
    """The guards' knobs; the field names are ``PeerConfig``'s."""

    mix_guard_margin: float | None = None
    mix_guard_warmup: int = 0
    rollback_margin: float | None = None
    rollback_warmup: int = 5


@dataclass(frozen=True)
class RoundDecision(Generic[E]):
    """Which parameters a round keeps, and why.

    ``evaluation`` is the evaluation of the model the guards judged (the mix, or the trained model when the
    mix was refused); ``params`` is the model in effect after the round (after a rollback: the restored one).
    ``notes`` are (event, reason) pairs for the version log, ``logs`` one line each for the operator.
    """

    params_source: Literal["mixed", "trained", "rollback"]
    params: Params
    evaluation: E
    mix_refused: bool = False
    rolled_back: bool = False
    notes: tuple[tuple[str, str], ...] = ()
    logs: tuple[str, ...] = ()


def refuses_mix(
    round_: int, trained_eval: Evaluation | None, mixed_eval: Evaluation, cfg: GuardConfig
) -> bool:
    """The mix guard's rule: past the warm-up, the mix lost more than ``mix_guard_margin`` of the trained
    model's accuracy (or has none)."""
    margin = cfg.mix_guard_margin
    return (
        margin is not None
        and round_ > cfg.mix_guard_warmup
        and trained_eval is not None
        and trained_eval.accuracy is not None
        and (mixed_eval.accuracy is None or mixed_eval.accuracy < trained_eval.accuracy * (1.0 - margin))
    )


def decide_round(
    round_: int,
    trained_eval: E | None,
    mixed_eval: E,
    trained: Params,
    mixed: Params,
    *,
    cfg: GuardConfig,
    rollback: RollbackGuard | None,
) -> RoundDecision[E]:
    """Apply the mix guard, then the rollback guard, to one round's trained and mixed models."""
    notes: list[tuple[str, str]] = []
    logs: list[str] = []
    source: Literal["mixed", "trained", "rollback"] = "mixed"
    params, ev = mixed, mixed_eval
    refused = refuses_mix(round_, trained_eval, mixed_eval, cfg)
    if refused:
        assert trained_eval is not None and trained_eval.accuracy is not None  # by refuses_mix
        mix_acc = "-" if mixed_eval.accuracy is None else f"{mixed_eval.accuracy:.4f}"
        logs.append(
            f"mix refused round={round_} mix_accuracy={mix_acc} "
            f"trained_accuracy={trained_eval.accuracy:.4f}: keeping the trained model"
        )
        notes.append(
            (
                "mix_refused",
                f"the mix lost over {cfg.mix_guard_margin:.0%} of the trained accuracy "
                f"(mix {mix_acc}, trained {trained_eval.accuracy:.4f}, kept)",
            )
        )
        source, params, ev = "trained", trained, trained_eval
    rolled_back = False
    if rollback is not None and ev.accuracy is not None:
        back = rollback.observe(round_, ev.accuracy, params)  # the params in effect, never a refused mix
        if back is not None:
            best_round, best_acc, params = back
            source, rolled_back = "rollback", True
            logs.append(
                f"rollback round={round_} accuracy={ev.accuracy:.4f} best_round={best_round} "
                f"best_accuracy={best_acc:.4f}"
            )
            notes.append(
                (
                    "rollback",
                    f"validation accuracy fell over {cfg.rollback_margin} below a recent version "
                    f"({ev.accuracy:.4f}; restored round {best_round} at {best_acc:.4f})",
                )
            )
    return RoundDecision(source, params, ev, refused, rolled_back, tuple(notes), tuple(logs))
