"""Echo: a neighbour whose model lies beyond the own trained model, along the own update.

``echo = cos(x_i - own_after, own_after - own_before)``: where a neighbour's model sits *relative to the own
trained model*, measured along the step the own data just took. An honest neighbour on non-IID data trained
on other data from a mix near the own one, so its model lies behind the own trained model along the own
step (the own step is what the own data add and the neighbour's data do not): measured on digits,
Dirichlet 0.3, random 6-regular, 25 % dissensus attackers, after round 5, honest pairs at median -0.62,
99th percentile -0.13, maximum -0.05 (docs/scoring.md). A dissensus model aimed at this peer (He et al.
2022; :class:`simulations.poisoning.Dissensus`: ``x_t + lambda (x_t - m)``, the target's own model pushed
further from its neighbours' mean) extrapolates the own specialisation, i.e. the own step: its echo was
+0.2 to +0.46 at the targeted peer in every round after the attack locked on. There, with three of six
neighbours aimed at it, the peer was otherwise symmetric between them and its three honest neighbours
(equal distances, equal counts, and a *better* loss on its own data for the attackers' models), so no
robust rule could break the tie and the peer drifted to its local optimum (CI slice flake: 62.4 %).

:class:`Echo` keeps the last echo of each neighbour's version and turns it into a mixing-weight factor: 1 at
``echo_ok`` or below, 0 at ``echo_bad`` and above, linear between. It only weighs, never evicts: on IID
data honest echoes sit near 0 (neighbours' models and the own one differ by noise), and a neighbour whose
data resemble the own data loses part of its weight, which costs little (its data add little to the own).

**A model ahead of the own one is not an echo when the own data prefer it.** On IID data in a small model
the honest echo is noise (logistic regression, bench_scale's scenario: honest q10 -0.86 to -0.81, q90
+0.20 to +0.64), and a peer whose mix was dragged *behind* the honest consensus (an attacker majority of
sign-flippers among its neighbours, which its scores cannot single out) trains back towards it: then every
honest neighbour lies ahead of the own trained model along the own step (echo +0.45 to +0.7) while the
sign-flippers lie behind it (-0.5 to -0.9). The echo took the honest weight, the attackers kept theirs, and
the peer ended at 40-59 %. Seen from the peer that is the mirror image of dissensus (one group ahead, one
behind), so no rule on the echoes alone can tell them apart (the honest group was the minority, the
outlier). The own data can: those honest models had 0.01-0.08 times the own trained model's loss on the own
validation split, while dissensus models aimed at the peer never beat it (1.3 to 38 times, docs/scoring.md).
So a neighbour whose validation loss is below ``ahead`` times the own trained model's keeps its full weight:
what lies beyond the own step and fits the own data better than the own training did is where that training
is heading, not an extrapolation of it. The same exemption ends the feedback loop (the honest weight comes
back as soon as the own model falls behind). Without a loss (no validation split, ``use_val_loss`` off) the
echo alone decides, as before.

Failure modes: an attacker that knows the rule keeps its model's component along the target's step at or
below zero; the dissensus push then has to be orthogonal to the target's own specialisation, which is most of
what it extrapolated (an adaptive form is measured in docs/scoring.md). Models inside the spread that do
not extrapolate the own step (ALIE, IPM) echo like honest ones: this signal does not see them. A dissensus
model that beats the own trained model on the own validation data is exempt (measured at non-target peers
now and then, never at the peer it aimed at: docs/scoring.md); to be exempt at its target it would have to
fit the target's own data better than the target's own training does. Within the founding rounds every
model starts from nearly the same place and the signal is not applied.

Pure: no clock, no randomness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from p2pfl.errors import ConfigError
from p2pfl.scoring.numbers import is_real

__all__ = ["Echo", "EchoConfig", "echo", "loss_ratio"]


@dataclass(frozen=True)
class EchoConfig:
    """Thresholds of :class:`Echo`; ``ConfigError("scoring", field, reason)`` when invalid."""

    #: at or below this the neighbour keeps its full weight
    ok: float = 0.0
    #: at or above this its weight is 0
    bad: float = 0.25
    #: a neighbour whose loss on the own validation data is below this times the own trained model's keeps
    #: its full weight whatever its echo (0: never)
    ahead: float = 1.0

    def __post_init__(self) -> None:
        if not (is_real(self.ok) and is_real(self.bad) and -1.0 <= self.ok < self.bad <= 1.0):
            raise ConfigError(
                "scoring",
                "echo_ok/echo_bad",
                f"need -1 <= echo_ok < echo_bad <= 1, got {self.ok!r}, {self.bad!r}",
            )
        if not (is_real(self.ahead) and 0.0 <= self.ahead < math.inf):
            raise ConfigError("scoring", "echo_ahead", f"must be a finite number >= 0, got {self.ahead!r}")


def echo(
    model: NDArray[np.float64], after: NDArray[np.float64], own_update: NDArray[np.float64]
) -> float | None:
    """``cos(model - after, own_update)``; ``None`` when either vector is zero or not finite."""
    u = model - after
    nu = float(np.linalg.norm(u))
    nd = float(np.linalg.norm(own_update))
    if nu == 0.0 or nd == 0.0 or not (math.isfinite(nu) and math.isfinite(nd)):
        return None
    return float(np.clip(np.dot(u, own_update) / (nu * nd), -1.0, 1.0))


def loss_ratio(loss: float | None, own_loss: float | None) -> float | None:
    """A neighbour's loss on the own validation data over the own trained model's; ``None`` when either is
    missing or not finite, or the own loss is not positive (no evidence either way)."""
    if loss is None or own_loss is None or not (math.isfinite(loss) and math.isfinite(own_loss)):
        return None
    return loss / own_loss if own_loss > 0 else None


class Echo:
    """Each neighbour's last echo and the weight factor it earns (see the module doc)."""

    def __init__(self, config: EchoConfig | None = None) -> None:
        self.config = config if config is not None else EchoConfig()
        self._last: dict[str, float] = {}

    def observe(self, peer: str, value: float | None, loss_ratio: float | None = None) -> None:
        """Record the echo of ``peer``'s version just scored (``None``: no evidence, forget the last).
        ``loss_ratio`` (:func:`loss_ratio`) below ``ahead``: the own data prefer this model to the own
        trained one, so its echo is no evidence either."""
        if value is None or (loss_ratio is not None and loss_ratio < self.config.ahead):
            self._last.pop(peer, None)
        else:
            self._last[peer] = value

    def last(self, peer: str) -> float | None:
        return self._last.get(peer)

    def weight(self, peer: str) -> float:
        """Mixing-weight factor in ``[0, 1]``: 1 up to ``ok``, linear to 0 at ``bad``."""
        value = self._last.get(peer)
        cfg = self.config
        if value is None or value <= cfg.ok:
            return 1.0
        if value >= cfg.bad:
            return 0.0
        return (cfg.bad - value) / (cfg.bad - cfg.ok)

    def reset(self, peer: str) -> None:
        self._last.pop(peer, None)

    def __len__(self) -> int:
        """Peers with an echo (bounded with the scorer's records: p2pfl.protocol.churn)."""
        return len(self._last)
