"""The sections of a simulation scenario (``[run]``, ``[data]``, ``[model]``, ``[topology]``,
``[aggregation]``, ``[scoring]``, ``[rollout]``, ``[privacy]``, ``[churn]``): frozen, validated dataclasses
(split from :mod:`p2pfl.sim.scenario`, which assembles them into a :class:`~p2pfl.sim.scenario.Scenario` and
re-exports them). The attack and Sybil sections live in :mod:`p2pfl.sim.scenario_attacks`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from p2pfl.aggregation import AggregationConfig
from p2pfl.config import PeerConfig
from p2pfl.config.schema import default_of, sim_fields, toml_keys
from p2pfl.errors import ConfigError, P2PFLError
from p2pfl.privacy.config import PrivacyConfig
from p2pfl.rollout import RolloutConfig
from p2pfl.scoring import ScoringConfig

from .after_rounds import AFTER_ROUNDS

# re-exported: their home is simulations/scenario_attacks.py
from .scenario_attacks import ATTACKS as ATTACKS  # noqa: PLC0414
from .scenario_attacks import FLOOD_SENDERS as FLOOD_SENDERS  # noqa: PLC0414
from .scenario_attacks import ISSUE15_ATTACKS as ISSUE15_ATTACKS  # noqa: PLC0414
from .scenario_attacks import MODEL_ATTACKS as MODEL_ATTACKS  # noqa: PLC0414
from .scenario_attacks import PLACEMENTS as PLACEMENTS  # noqa: PLC0414
from .scenario_attacks import SLEEPER_ATTACKS as SLEEPER_ATTACKS  # noqa: PLC0414
from .scenario_attacks import SYBIL_BEHAVIOURS as SYBIL_BEHAVIOURS  # noqa: PLC0414
from .scenario_attacks import SYBIL_DATA as SYBIL_DATA  # noqa: PLC0414
from .scenario_attacks import AttackSpec as AttackSpec  # noqa: PLC0414
from .scenario_attacks import ScenarioError as ScenarioError  # noqa: PLC0414
from .scenario_attacks import SybilSpec as SybilSpec  # noqa: PLC0414
from .scenario_attacks import _choice, _get, _known, _range

TRANSPORTS = ("libp2p", "memory")
DATASETS = ("digits", "mnist5k", "breast_cancer", "wine", "synthetic", "synthetic_hard")
PARTITIONS = ("iid", "dirichlet", "shards")
MODELS = ("logreg", "mlp")
OPTIMISERS = ("sgd",)
TOPOLOGIES = ("complete", "ring", "random-regular", "peer-sampling", "dumbbell")


def _peer_settings(table: Mapping[str, Any], section: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The PeerConfig knobs a scenario ``[section]`` sets (``sim=`` in the schema), by scenario key: typed and
    range-checked by PeerConfig itself, so a scenario accepts exactly what a peer config accepts."""
    keys = toml_keys()
    kinds = {spec.field: (spec.kinds, spec.to_float) for spec in keys.values()}
    out: dict[str, Any] = {}
    for key, name in sim_fields(section).items():
        kind, to_float = kinds[name]
        value = table.get(key, defaults.get(key, default_of(PeerConfig, name)))
        if value is None:
            out[key] = None
            continue
        value = _get({key: value}, section, key, kind, None)
        out[key] = float(value) if to_float else value
    try:
        PeerConfig(**{"network_id": "sim", **{sim_fields(section)[k]: v for k, v in out.items()}})
    except ConfigError as exc:
        if exc.key is None or exc.reason is None:
            raise ScenarioError(f"[{section}] {exc}") from None
        key = next((k for k, n in sim_fields(section).items() if exc.key in (n, k)), exc.key)
        raise ScenarioError(section, key, exc.reason) from None
    return out


#: Scenario defaults that differ from a peer config's: shorter rounds for a simulation's small models
RUN_DEFAULTS: dict[str, Any] = {"network_id": "sim", "max_round_wait_s": 5.0}
#: PeerConfig settings every simulated peer gets, whatever the scenario
SIM_PEER_SETTINGS: dict[str, Any] = {
    "join_on_start": False,  # every peer starts from the same initial model
    "reconnect_interval_s": 1.0,  # churned peers come back within a round or two
}


# ----------------------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class RunSpec:
    """The run's own keys, plus the PeerConfig knobs with ``sim="run"`` (pacing, network id)."""

    seed: int = 0
    rounds: int = 20
    transport: str = "libp2p"
    time_limit_s: float = 600.0
    #: memory engine: receivers relay announcements to the origin's other neighbours, as gossipsub does
    #: (off: a broadcast reaches the direct neighbours only, the cheapest)
    relay: bool = False
    #: what an honest peer does after its last round while slower peers still run (p2pfl.sim.after_rounds):
    #: "mix" (keep running rounds), "respond" (a round per new version of an unfinished neighbour) or
    #: "serve" (serve its final model, nothing more)
    after_rounds: str = "mix"
    #: libp2p engine: peers per worker process (each still its own host, port and state; one trio loop per
    #: process), or "auto": ceil(peers / cores). 1: one process per peer (docs/simulation.md)
    peers_per_process: int | str = 1
    wait_fraction: float = default_of(PeerConfig, "wait_fraction")
    wait_before_mix: bool = default_of(PeerConfig, "wait_before_mix")
    mix_steps: int = default_of(PeerConfig, "mix_steps")
    #: link rotation (p2pfl.protocol.rotation): the memory and libp2p engines dial the plan's peers
    rotate_every: int = default_of(PeerConfig, "rotate_every")
    rotate_degree: int = default_of(PeerConfig, "rotate_degree")
    rotate_cooldown: float = default_of(PeerConfig, "rotate_cooldown")
    #: whose replicas enter the mix; "chosen": only the topology's links (docs/learning.md)
    mix_scope: str = default_of(PeerConfig, "mix_scope")
    max_round_wait_s: float = RUN_DEFAULTS["max_round_wait_s"]
    network_id: str = RUN_DEFAULTS["network_id"]
    #: delta codec of every peer: raw, fp16, int8 or topk:<density> (docs/wire-format.md section 7)
    codec: str = default_of(PeerConfig, "codec")

    @classmethod
    def parse(cls, t: Mapping[str, Any]) -> RunSpec:
        s = "run"
        _known(t, s, {f.name for f in dataclasses.fields(cls)})
        out = cls(
            seed=_get(t, s, "seed", int, 0),
            rounds=_get(t, s, "rounds", int, 20),
            transport=_choice(s, "transport", _get(t, s, "transport", str, "libp2p"), TRANSPORTS),
            time_limit_s=_get(t, s, "time_limit_s", (int, float), 600.0),
            relay=_get(t, s, "relay", bool, False),
            after_rounds=_choice(s, "after_rounds", _get(t, s, "after_rounds", str, "mix"), AFTER_ROUNDS),
            peers_per_process=_packing(t.get("peers_per_process", 1)),
            **_peer_settings(t, s, RUN_DEFAULTS),
        )
        _range(s, "seed", out.seed, 0)
        _range(s, "rounds", out.rounds, 1, 100_000)
        _range(s, "time_limit_s", out.time_limit_s, 0, lo_open=True)
        if out.peers_per_process != 1 and out.transport != "libp2p":
            raise ScenarioError(
                f"[run] peers_per_process: packs libp2p worker processes; with transport = "
                f"{out.transport!r} every peer already shares one process (remove the key)"
            )
        return out


def _packing(value: Any) -> int | str:
    """``[run] peers_per_process``: a positive int or "auto"."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value  # type: ignore[no-any-return]
    raise ScenarioError(f'[run] peers_per_process: expected an integer >= 1 or "auto", got {value!r}')


@dataclass(frozen=True)
class DataSpec:
    dataset: str = "digits"
    partition: str = "dirichlet"
    alpha: float = 0.5
    classes_per_peer: int = 2
    test_fraction: float = 0.2
    val_fraction: float = 0.15
    synthetic_samples: int = 3000

    @classmethod
    def parse(cls, t: Mapping[str, Any]) -> DataSpec:
        s = "data"
        _known(t, s, {f.name for f in dataclasses.fields(cls)})
        out = cls(
            dataset=_choice(s, "dataset", _get(t, s, "dataset", str, "digits"), DATASETS),
            partition=_choice(s, "partition", _get(t, s, "partition", str, "dirichlet"), PARTITIONS),
            alpha=_get(t, s, "alpha", (int, float), 0.5),
            classes_per_peer=_get(t, s, "classes_per_peer", int, 2),
            test_fraction=_get(t, s, "test_fraction", (int, float), 0.2),
            val_fraction=_get(t, s, "val_fraction", (int, float), 0.15),
            synthetic_samples=_get(t, s, "synthetic_samples", int, 3000),
        )
        _range(s, "alpha", out.alpha, 0, lo_open=True)
        _range(s, "classes_per_peer", out.classes_per_peer, 1)
        _range(s, "test_fraction", out.test_fraction, 0, 0.9, lo_open=True)
        _range(s, "val_fraction", out.val_fraction, 0, 0.9, lo_open=True)
        _range(s, "synthetic_samples", out.synthetic_samples, 10, 10_000_000)
        return out


@dataclass(frozen=True)
class ModelSpec:
    kind: str = "mlp"
    hidden: int = 32
    optimiser: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_decay: float = 1.0
    lr_min: float = 0.0
    local_steps: int = 10
    batch_size: int = 16
    #: FedProx proximal coefficient of the numpy learner (0: plain SGD; issue 16, docs/learning.md)
    prox: float = 0.0

    @classmethod
    def parse(cls, t: Mapping[str, Any]) -> ModelSpec:
        s = "model"
        _known(t, s, {f.name for f in dataclasses.fields(cls)})
        out = cls(
            kind=_choice(s, "kind", _get(t, s, "kind", str, "mlp"), MODELS),
            hidden=_get(t, s, "hidden", int, 32),
            optimiser=_choice(s, "optimiser", _get(t, s, "optimiser", str, "sgd"), OPTIMISERS),
            lr=_get(t, s, "lr", (int, float), 0.1),
            momentum=_get(t, s, "momentum", (int, float), 0.9),
            weight_decay=_get(t, s, "weight_decay", (int, float), 0.0),
            lr_decay=_get(t, s, "lr_decay", (int, float), 1.0),
            lr_min=_get(t, s, "lr_min", (int, float), 0.0),
            local_steps=_get(t, s, "local_steps", int, 10),
            batch_size=_get(t, s, "batch_size", int, 16),
            prox=_get(t, s, "prox", (int, float), 0.0),
        )
        _range(s, "prox", out.prox, 0, 1000)
        _range(s, "hidden", out.hidden, 1, 100_000)
        _range(s, "lr", out.lr, 0, 100, lo_open=True)
        _range(s, "momentum", out.momentum, 0, 0.999)
        _range(s, "weight_decay", out.weight_decay, 0, 1)
        _range(s, "lr_decay", out.lr_decay, 0, 1, lo_open=True)
        _range(s, "lr_min", out.lr_min, 0, out.lr)
        _range(s, "local_steps", out.local_steps, 1, 100_000)
        _range(s, "batch_size", out.batch_size, 1, 100_000)
        return out


@dataclass(frozen=True)
class TopologySpec:
    peers: int = 8
    kind: str = "complete"
    degree: int = 4
    fanout: int = 3
    #: dumbbell: 0 = two cliques joined by one edge; k = k bridge peers linking the two cliques
    bridges: int = 0

    @classmethod
    def parse(cls, t: Mapping[str, Any]) -> TopologySpec:
        s = "topology"
        _known(t, s, {f.name for f in dataclasses.fields(cls)})
        out = cls(
            peers=_get(t, s, "peers", int, 8),
            kind=_choice(s, "kind", _get(t, s, "kind", str, "complete"), TOPOLOGIES),
            degree=_get(t, s, "degree", int, 4),
            fanout=_get(t, s, "fanout", int, 3),
            bridges=_get(t, s, "bridges", int, 0),
        )
        _range(s, "peers", out.peers, 2, 100_000)
        if out.kind == "random-regular":
            _range(s, "degree", out.degree, 1, out.peers - 1)
            if out.peers * out.degree % 2:
                raise ScenarioError(
                    f"[topology] degree: peers * degree must be even, got {out.peers} * {out.degree}"
                )
        if out.kind == "peer-sampling":
            _range(s, "fanout", out.fanout, 1, out.peers - 1)
        if out.kind == "dumbbell" and out.peers < 4:
            raise ScenarioError(f"[topology] peers: a dumbbell needs at least 4 peers, got {out.peers}")
        _range(s, "bridges", out.bridges, 0, max(out.peers - 4, 0))
        return out


def _dataclass_params(
    cls: Any, table: Mapping[str, Any], section: str, skip: tuple[str, ...]
) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    params = {k: v for k, v in table.items() if k not in skip}
    for key in params:
        if key not in names:
            raise ScenarioError(
                f"[{section}] {key}: unknown key; known keys: {', '.join(sorted({*names, *skip}))}"
            )
    try:
        cls(**params)
    except ConfigError as exc:
        if exc.section == section and exc.key is not None and exc.reason is not None:
            raise ScenarioError(section, exc.key, exc.reason) from None
        raise ScenarioError(f"[{section}] {exc}") from None
    except (P2PFLError, TypeError, ValueError) as exc:
        raise ScenarioError(f"[{section}] {exc}") from None
    return params


@dataclass(frozen=True)
class AggregationSpec:
    """``rule`` plus any :class:`p2pfl.aggregation.AggregationConfig` field (validated there)."""

    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, t: Mapping[str, Any]) -> AggregationSpec:
        return cls(_dataclass_params(AggregationConfig, t, "aggregation", ()))

    def config(self) -> AggregationConfig:
        return AggregationConfig(**self.params)

    @property
    def rule(self) -> str:
        return str(self.params.get("rule", AggregationConfig().rule))


@dataclass(frozen=True)
class ScoringSpec:
    """``enabled``, ``val_scoring``, ``mix_guard`` (the peer's ``mix_guard_margin``; absent: off) and any
    :class:`p2pfl.scoring.ScoringConfig` field (the thresholds)."""

    enabled: bool = default_of(PeerConfig, "scoring_enabled")
    val_scoring: bool = default_of(PeerConfig, "val_scoring")
    params: dict[str, Any] = field(default_factory=dict)
    mix_guard: float | None = default_of(PeerConfig, "mix_guard_margin")

    @classmethod
    def parse(cls, t: Mapping[str, Any]) -> ScoringSpec:
        s = "scoring"
        own = tuple(sim_fields(s))
        return cls(**_peer_settings(t, s, {}), params=_dataclass_params(ScoringConfig, t, s, own))

    def config(self) -> ScoringConfig:
        return ScoringConfig(**self.params)


@dataclass(frozen=True)
class RolloutSpec:
    """Any :class:`p2pfl.rollout.RolloutConfig` field (validated there): every simulated peer's ``[rollout]``
    (docs/rollout.md). Absent: off, so ΔAUC/ΔF1 compare each version with the previous one."""

    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, t: Mapping[str, Any]) -> RolloutSpec:
        return cls(_dataclass_params(RolloutConfig, t, "rollout", ()))

    def config(self) -> RolloutConfig:
        return RolloutConfig(**self.params)


@dataclass(frozen=True)
class PrivacySpec:
    """Any :class:`p2pfl.privacy.PrivacyConfig` field (validated there): every honest simulated peer's
    ``[privacy]`` (docs/privacy.md). Absent: off. ``rounds`` defaults to ``[run] rounds``, so a budget given
    as ``epsilon`` is planned over the run."""

    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, t: Mapping[str, Any], run_rounds: int) -> PrivacySpec:
        table = dict(t)
        if table.get("mode", "off") != "off" and "noise_multiplier" not in table:
            table.setdefault("rounds", run_rounds)
        return cls(_dataclass_params(PrivacyConfig, table, "privacy", ()))

    def config(self) -> PrivacyConfig:
        return PrivacyConfig(**self.params)


@dataclass(frozen=True)
class CrashEvent:
    peer: int
    round: int
    downtime_s: float = 2.0


@dataclass(frozen=True)
class ChurnSpec:
    """Honest peers leave after a round with probability ``leave``; an absent peer comes back with
    probability ``rejoin`` per ``tick_s`` (resuming from its checkpoint). ``crashes`` are scripted events."""

    leave: float = 0.0
    rejoin: float = 0.5
    tick_s: float = 0.5
    crashes: tuple[CrashEvent, ...] = ()

    @classmethod
    def parse(cls, t: Mapping[str, Any], peers: int) -> ChurnSpec:
        s = "churn"
        _known(t, s, {f.name for f in dataclasses.fields(cls)})
        leave = _get(t, s, "leave", (int, float), 0.0)
        rejoin = _get(t, s, "rejoin", (int, float), 0.5)
        tick = _get(t, s, "tick_s", (int, float), 0.5)
        _range(s, "leave", leave, 0, 1)
        _range(s, "rejoin", rejoin, 0, 1, lo_open=True)
        _range(s, "tick_s", tick, 0.01, 60)
        raw = _get(t, s, "crashes", list, [])
        crashes = []
        for i, ev in enumerate(raw):
            where = f"crashes[{i}]"
            if not isinstance(ev, dict):
                raise ScenarioError(f"[churn] {where}: must be a table {{peer, round, downtime_s}}")
            _known(ev, f"churn] [{where}", {"peer", "round", "downtime_s"})
            for key in ("peer", "round"):
                if key not in ev:
                    raise ScenarioError(f"[churn] {where}.{key}: required")
            c = CrashEvent(
                peer=_get(ev, s, "peer", int, 0),
                round=_get(ev, s, "round", int, 0),
                downtime_s=_get(ev, s, "downtime_s", (int, float), 2.0),
            )
            if not 0 <= c.peer < peers:
                raise ScenarioError(f"[churn] {where}.peer: must be in [0, {peers}), got {c.peer}")
            _range(s, f"{where}.round", c.round, 1)
            _range(s, f"{where}.downtime_s", c.downtime_s, 0, 600)
            crashes.append(c)
        return cls(leave, rejoin, tick, tuple(crashes))

    @property
    def enabled(self) -> bool:
        return self.leave > 0 or bool(self.crashes)
