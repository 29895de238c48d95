"""Echo: a neighbour whose model lies beyond the own trained model, along the own update.

``echo = cos(x_i - own_after, own_after - own_before)``: where a neighbour's model sits *relative to the own
trained model*, measured along the step the own data just took. An honest neighbour on non-IID data trained
on other data from a mix near the own one, so its model lies behind the own trained model along the own
step (the own step is what the own data add and the neighbour's data do not): measured on digits,
Dirichlet 0.3, random 6-regular, 25 % dissensus attackers, after round 5, honest pairs at median -0.62,
99th percentile -0.13, maximum -0.05 (docs/scoring.md). A dissensus model aimed at this peer (He et al.
2022; :class:`simulations.attacks.Dissensus`: ``x_t + lambda (x_t - m)``, the target's own model pushed
further from its neighbours' mean) extrapolates the own specialisation, i.e. the own step: its echo was
+0.2 to +0.46 at the targeted peer in every round after the attack locked on. There, with three of six
neighbours aimed at it, the peer was otherwise symmetric between them and its three honest neighbours
(equal distances, equal counts, and a *better* loss on its own data for the attackers' models), so no
robust rule could break the tie and the peer drifted to its local optimum (CI slice flake: 62.4 %).

:class:`Echo` keeps the last echo of each neighbour's version and turns it into a mixing-weight factor: 1 at
``echo_ok`` or below, 0 at ``echo_bad`` and above, linear between. It only weighs, never evicts: on IID
data honest echoes sit near 0 (neighbours' models and the own one differ by noise), and a neighbour whose
data resemble the own data loses part of its weight, which costs little (its data add little to the own).

Failure modes: an attacker that knows the rule keeps its model's component along the target's step at or
below zero; the dissensus push then has to be orthogonal to the target's own specialisation, which is most of
what it extrapolated (an adaptive form is measured in docs/scoring.md). Models inside the spread that do
not extrapolate the own step (ALIE, IPM) echo like honest ones: this signal does not see them. Within the
founding rounds every model starts from nearly the same place and the signal is not applied.

Pure: no clock, no randomness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from p2pfl.errors import ConfigError
from p2pfl.scoring.numbers import is_real

__all__ = ["Echo", "EchoConfig", "echo"]


@dataclass(frozen=True)
class EchoConfig:
    """Thresholds of :class:`Echo`; ``ConfigError("scoring", field, reason)`` when invalid."""

    #: at or below this the neighbour keeps its full weight
    ok: float = 0.0
    #: at or above this its weight is 0
    bad: float = 0.25

    def __post_init__(self) -> None:
        if not (is_real(self.ok) and is_real(self.bad) and -1.0 <= self.ok < self.bad <= 1.0):
            raise ConfigError(
                "scoring",
                "echo_ok/echo_bad",
                f"need -1 <= echo_ok < echo_bad <= 1, got {self.ok!r}, {self.bad!r}",
            )


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


class Echo:
    """Each neighbour's last echo and the weight factor it earns (see the module doc)."""

    def __init__(self, config: EchoConfig | None = None) -> None:
        self.config = config if config is not None else EchoConfig()
        self._last: dict[str, float] = {}

    def observe(self, peer: str, value: float | None) -> None:
        """Record the echo of ``peer``'s version just scored (``None``: no evidence, forget the last)."""
        if value is None:
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
