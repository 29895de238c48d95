"""Scenario ``[attack]`` and ``[sybil]`` sections, and the checks every scenario section uses.

Split out of :mod:`simulations.scenario` (which re-exports every name here): what each attack kind does is
in simulations/attacks.py, protocol_attacks.py and sybils.py.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from p2pfl.errors import ConfigError

#: Issue 15's attacks (see simulations/attacks.py and simulations/protocol_attacks.py)
ISSUE15_ATTACKS = ("labelperm", "honest_then_attack", "extreme", "equivocate", "slow", "flood")
#: Issue 16's attacks (see simulations/attacks.py): mimic publishes honest models, dissensus does not
ISSUE16_ATTACKS = ("mimic", "dissensus")
ATTACKS = (
    "none",
    "signflip",
    "gaussian",
    "labelflip",
    "alie",
    "ipm",
    "replay",
    "forge",
    "crash",
    *ISSUE15_ATTACKS,
    *ISSUE16_ATTACKS,
)
#: Attacks whose published models are poisoned: honest peers are expected to evict them.
MODEL_ATTACKS = (
    "signflip",
    "gaussian",
    "labelflip",
    "alie",
    "ipm",
    "labelperm",
    "honest_then_attack",
    "extreme",
    "dissensus",
)
#: What an ``honest_then_attack`` peer turns into after its honest rounds
SLEEPER_ATTACKS = ("signflip", "alie")
SYBIL_BEHAVIOURS = ("labelperm", "signflip", "honest_then_attack")
SYBIL_DATA = ("copy", "slice")
FLOOD_SENDERS = ("self", "random")
PLACEMENTS = ("random", "targeted")
#: ``[attack] redial``: the adaptive form against link rotation (p2pfl.protocol.rotation)
REDIALS = ("off", "closed", "all", "refresh")


class ScenarioError(ConfigError):
    """A scenario file is invalid; the message names ``[section] key``."""


# ------------------------------------------------------------------------------------------- checks


def _type_name(expected: type | tuple[type, ...]) -> str:
    if isinstance(expected, type):
        return expected.__name__
    return " or ".join(t.__name__ for t in expected)


def _get(
    table: Mapping[str, Any], section: str, key: str, expected: type | tuple[type, ...], default: Any
) -> Any:
    value = table.get(key, default)
    if value is None and default is None:
        return None
    ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in _as_tuple(expected))
    if not ok:
        raise ScenarioError(
            f"[{section}] {key}: expected {_type_name(expected)}, got {type(value).__name__} {value!r}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ScenarioError(f"[{section}] {key}: must be finite, got {value!r}")
    return float(value) if expected == (int, float) else value


def _as_tuple(expected: type | tuple[type, ...]) -> tuple[type, ...]:
    return expected if isinstance(expected, tuple) else (expected,)


def _choice(section: str, key: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ScenarioError(f"[{section}] {key}: must be one of {', '.join(choices)}; got {value!r}")
    return value


def _range(
    section: str, key: str, value: float, lo: float, hi: float = math.inf, *, lo_open: bool = False
) -> None:
    if value < lo or value > hi or (lo_open and value == lo):
        bracket = "(" if lo_open else "["
        raise ScenarioError(f"[{section}] {key}: must be in {bracket}{lo}, {hi}], got {value!r}")


def _known(table: Mapping[str, Any], section: str, keys: tuple[str, ...] | set[str]) -> None:
    for key in table:
        if key not in keys:
            raise ScenarioError(f"[{section}] {key}: unknown key; known keys: {', '.join(sorted(keys))}")


# ------------------------------------------------------------------------------------------ attacks


@dataclass(frozen=True)
class AttackSpec:
    """``kind`` and its knobs; see simulations/attacks.py (model attacks) and protocol_attacks.py."""

    kind: str = "none"
    fraction: float = 0.0
    placement: str = "random"
    scale: float = 4.0
    sigma: float = 1.0
    z: float = 1.0
    epsilon: float = 0.5
    crash_round: int = 3
    interval_s: float = 0.5
    #: honest_then_attack: honest for this many own rounds, then ``then``
    honest_rounds: int = 5
    then: str = "signflip"
    #: extreme: every published coordinate is about this value (finite float32)
    extreme_value: float = -1e38
    #: slow: at most one round (so one published version) per ``period_s`` seconds
    period_s: float = 9.0
    #: equivocate and flood start at this own round (flood: one burst then)
    start_round: int = 3
    flood_count: int = 10_000
    flood_sender: str = "self"
    #: dissensus: how far past the target neighbour (in units of its distance from the mean)
    dissensus_lambda: float = 1.0
    #: dissensus: the adaptive form against the echo signal (p2pfl/scoring/echo.py): drop the push's
    #: component along the target's last public step
    dissensus_evade_echo: bool = False
    #: dissensus: publish honest trained models for this many own rounds first, then push at once (the
    #: adaptive form against drift trust, p2pfl/scoring/badrun.py: a victim dragged suddenly jumps and
    #: forfeits its honest neighbours' trust); 0: from the start
    dissensus_from_round: int = 0
    #: mimic: the adaptive form against ``[scoring] copies_ratio`` (p2pfl/scoring/copies.py): add noise of
    #: this many lengths of the attacker's own update (a random direction per version), so its copies are
    #: no exact ones; 0: verbatim copies
    mimic_noise: float = 0.0
    #: alie: ``"random"`` is the adaptive form against the heading signal (p2pfl/scoring/heading.py): a
    #: random sign per coordinate, drawn once, instead of ``mean - z * std`` in every coordinate
    alie_signs: str = "fixed"
    #: ipm: the adaptive form against the heading signal: drop the push's component back along the
    #: consensus's progress as the attacker sees it
    ipm_evade_lag: bool = False
    #: ipm: the adaptive form that knows the lag test's thresholds: keeps the cosine of its offset with the
    #: progress it sees at this value or above (-1: off; -0.25 sits just inside ``heading_lag_ok``)
    ipm_lag_floor: float = -1.0
    #: ipm: the colluders that attack the lag test's gate: attackers with an odd seed publish the
    #: neighbours' update extrapolated forward, so their honest neighbours' centres run ahead of them
    ipm_gate_breakers: bool = False
    #: labelflip: the adaptive form against the validation-loss signal (``[scoring] loss_ok``/``loss_bad``):
    #: flip the labels of only this fraction of its samples (drawn once), so its model's loss on the
    #: observers' data rises less; 1: every label
    labelflip_fraction: float = 1.0
    #: the attack on link rotation (any kind): every ``redial_s`` seconds the attacker dials again each peer
    #: that closed its link (``"closed"``) or every peer of the plan it is not linked to (``"all"``), and it
    #: does not rotate its own links; ``"refresh"``: as ``"closed"``, and it also drops each link it has held
    #: ``refresh_rounds`` of its rounds and dials it again a round later, to come back as a young link
    #: before the peer's rotation closes it as the oldest; ``"off"``: it links as the topology and its
    #: rotation say
    redial: str = "off"
    redial_s: float = 0.01
    refresh_rounds: int = 3

    @classmethod
    def parse(cls, t: Mapping[str, Any]) -> AttackSpec:
        s = "attack"
        _known(t, s, {f.name for f in dataclasses.fields(cls)})
        out = cls(
            kind=_choice(s, "kind", _get(t, s, "kind", str, "none"), ATTACKS),
            fraction=_get(t, s, "fraction", (int, float), 0.0),
            placement=_choice(s, "placement", _get(t, s, "placement", str, "random"), PLACEMENTS),
            scale=_get(t, s, "scale", (int, float), 4.0),
            sigma=_get(t, s, "sigma", (int, float), 1.0),
            z=_get(t, s, "z", (int, float), 1.0),
            epsilon=_get(t, s, "epsilon", (int, float), 0.5),
            crash_round=_get(t, s, "crash_round", int, 3),
            interval_s=_get(t, s, "interval_s", (int, float), 0.5),
            honest_rounds=_get(t, s, "honest_rounds", int, 5),
            then=_choice(s, "then", _get(t, s, "then", str, "signflip"), SLEEPER_ATTACKS),
            extreme_value=_get(t, s, "extreme_value", (int, float), -1e38),
            period_s=_get(t, s, "period_s", (int, float), 9.0),
            start_round=_get(t, s, "start_round", int, 3),
            flood_count=_get(t, s, "flood_count", int, 10_000),
            flood_sender=_choice(s, "flood_sender", _get(t, s, "flood_sender", str, "self"), FLOOD_SENDERS),
            dissensus_lambda=_get(t, s, "dissensus_lambda", (int, float), 1.0),
            dissensus_evade_echo=_get(t, s, "dissensus_evade_echo", bool, False),
            dissensus_from_round=_get(t, s, "dissensus_from_round", int, 0),
            mimic_noise=_get(t, s, "mimic_noise", (int, float), 0.0),
            alie_signs=_choice(s, "alie_signs", _get(t, s, "alie_signs", str, "fixed"), ("fixed", "random")),
            ipm_evade_lag=_get(t, s, "ipm_evade_lag", bool, False),
            ipm_lag_floor=_get(t, s, "ipm_lag_floor", (int, float), -1.0),
            ipm_gate_breakers=_get(t, s, "ipm_gate_breakers", bool, False),
            labelflip_fraction=_get(t, s, "labelflip_fraction", (int, float), 1.0),
            redial=_choice(s, "redial", _get(t, s, "redial", str, "off"), REDIALS),
            redial_s=_get(t, s, "redial_s", (int, float), 0.01),
            refresh_rounds=_get(t, s, "refresh_rounds", int, 3),
        )
        _range(s, "fraction", out.fraction, 0, 0.5)
        _range(s, "scale", out.scale, 0)
        _range(s, "sigma", out.sigma, 0)
        _range(s, "z", out.z, 0)
        _range(s, "epsilon", out.epsilon, 0)
        _range(s, "crash_round", out.crash_round, 0)
        _range(s, "interval_s", out.interval_s, 0.01)
        _range(s, "honest_rounds", out.honest_rounds, 0, 100_000)
        _range(s, "extreme_value", abs(out.extreme_value), 0, 3.0e38)
        _range(s, "period_s", out.period_s, 0, 3600, lo_open=True)
        _range(s, "start_round", out.start_round, 0, 100_000)
        _range(s, "flood_count", out.flood_count, 1, 1_000_000)
        _range(s, "dissensus_lambda", out.dissensus_lambda, 0, 1000)
        _range(s, "dissensus_from_round", out.dissensus_from_round, 0, 100_000)
        _range(s, "mimic_noise", out.mimic_noise, 0, 1000)
        _range(s, "ipm_lag_floor", out.ipm_lag_floor, -1, 0)
        _range(s, "redial_s", out.redial_s, 0.001, 60)
        _range(s, "refresh_rounds", out.refresh_rounds, 1, 100_000)
        _range(s, "labelflip_fraction", out.labelflip_fraction, 0, 1, lo_open=True)
        return out

    def count(self, peers: int) -> int:
        """How many of ``peers`` attack (``fraction`` rounded to the nearest peer; 0 for ``none``)."""
        return 0 if self.kind == "none" else round(self.fraction * peers)


@dataclass(frozen=True)
class SybilSpec:
    """``count`` extra identities that join when every honest peer has done ``join_round`` rounds and leave
    when every honest peer has done ``leave_round`` (0: they never leave). Each links to ``degree`` random
    honest peers (0: to all of them), holds a copy of one honest peer's data (``data = "slice"``: only its
    first ``slice_fraction``) and behaves as ``behaviour`` says (``labelperm``: trains on labels permuted by
    one permutation shared by all Sybils; ``signflip``; ``honest_then_attack``: ``[attack] honest_rounds`` and
    ``then``). ``scale`` and ``z`` of ``[attack]`` apply to them too. ``closed``: honest peers admit the
    base peers only (their access list), so the Sybils are refused at connection."""

    count: int = 0
    join_round: int = 0
    leave_round: int = 0
    behaviour: str = "labelperm"
    degree: int = 0
    data: str = "copy"
    slice_fraction: float = 0.1
    #: a closed network: every honest peer's access list (``PeerConfig.allow``) names the base peers only
    closed: bool = False

    @classmethod
    def parse(cls, t: Mapping[str, Any]) -> SybilSpec:
        s = "sybil"
        _known(t, s, {f.name for f in dataclasses.fields(cls)})
        out = cls(
            count=_get(t, s, "count", int, 0),
            join_round=_get(t, s, "join_round", int, 0),
            leave_round=_get(t, s, "leave_round", int, 0),
            behaviour=_choice(s, "behaviour", _get(t, s, "behaviour", str, "labelperm"), SYBIL_BEHAVIOURS),
            degree=_get(t, s, "degree", int, 0),
            data=_choice(s, "data", _get(t, s, "data", str, "copy"), SYBIL_DATA),
            slice_fraction=_get(t, s, "slice_fraction", (int, float), 0.1),
            closed=_get(t, s, "closed", bool, False),
        )
        _range(s, "count", out.count, 0, 10_000)
        _range(s, "join_round", out.join_round, 0, 100_000)
        _range(s, "leave_round", out.leave_round, 0, 100_000)
        if out.leave_round and out.leave_round <= out.join_round:
            raise ScenarioError(s, "leave_round", f"must be 0 or after join_round ({out.join_round})")
        _range(s, "degree", out.degree, 0, 100_000)
        _range(s, "slice_fraction", out.slice_fraction, 0, 1, lo_open=True)
        return out

    @property
    def kind(self) -> str:
        """The attack kind a Sybil runs (its wrappers are the ``[attack]`` kinds of the same name)."""
        return self.behaviour
