"""Simulation scenarios: a TOML file -> frozen, validated dataclasses.

Every key has a default and is checked; an error names the section and the key (``[attack] fraction: ...``).
The resolved scenario (:meth:`Scenario.to_dict`) is valid input again, so it can be written next to the
results and handed to worker processes as it is.

Sections: ``[run]``, ``[data]``, ``[model]``, ``[topology]``, ``[aggregation]``, ``[scoring]``,
``[attack]``, ``[churn]``, ``[sybil]``, ``[rollout]``, ``[privacy]``. See ``docs/simulation.md`` for every
key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pfl.config import read_toml
from p2pfl.config.schema import sim_fields
from p2pfl.errors import P2PFLError

from .evidence_sim import EvidenceSpec

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
from .scenario_attacks import _get
from .scenario_sections import DATASETS as DATASETS  # noqa: PLC0414
from .scenario_sections import MODELS as MODELS  # noqa: PLC0414
from .scenario_sections import OPTIMISERS as OPTIMISERS  # noqa: PLC0414
from .scenario_sections import PARTITIONS as PARTITIONS  # noqa: PLC0414
from .scenario_sections import RUN_DEFAULTS as RUN_DEFAULTS  # noqa: PLC0414
from .scenario_sections import SIM_PEER_SETTINGS as SIM_PEER_SETTINGS  # noqa: PLC0414
from .scenario_sections import TOPOLOGIES as TOPOLOGIES  # noqa: PLC0414

# re-exported: their home is simulations/scenario_sections.py
from .scenario_sections import TRANSPORTS as TRANSPORTS  # noqa: PLC0414
from .scenario_sections import AggregationSpec as AggregationSpec  # noqa: PLC0414
from .scenario_sections import ChurnSpec as ChurnSpec  # noqa: PLC0414
from .scenario_sections import CrashEvent as CrashEvent  # noqa: PLC0414
from .scenario_sections import DataSpec as DataSpec  # noqa: PLC0414
from .scenario_sections import ModelSpec as ModelSpec  # noqa: PLC0414
from .scenario_sections import PrivacySpec as PrivacySpec  # noqa: PLC0414
from .scenario_sections import RolloutSpec as RolloutSpec  # noqa: PLC0414
from .scenario_sections import RunSpec as RunSpec  # noqa: PLC0414
from .scenario_sections import ScoringSpec as ScoringSpec  # noqa: PLC0414
from .scenario_sections import TopologySpec as TopologySpec  # noqa: PLC0414
from .scenario_sections import _dataclass_params as _dataclass_params  # noqa: PLC0414
from .scenario_sections import _peer_settings as _peer_settings  # noqa: PLC0414
from .secagg_sim import SecAggSpec

SECTIONS = (
    "run",
    "data",
    "model",
    "topology",
    "aggregation",
    "scoring",
    "attack",
    "churn",
    "sybil",
    "rollout",
    "secagg",
    "privacy",
    "evidence",
)


class SimulationError(P2PFLError):
    """A simulation run failed: a peer worker died or never came online, or never got the start signal."""


@dataclass(frozen=True)
class Scenario:
    run: RunSpec = field(default_factory=RunSpec)
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    topology: TopologySpec = field(default_factory=TopologySpec)
    aggregation: AggregationSpec = field(default_factory=AggregationSpec)
    scoring: ScoringSpec = field(default_factory=ScoringSpec)
    attack: AttackSpec = field(default_factory=AttackSpec)
    churn: ChurnSpec = field(default_factory=ChurnSpec)
    sybil: SybilSpec = field(default_factory=SybilSpec)
    rollout: RolloutSpec = field(default_factory=RolloutSpec)
    secagg: SecAggSpec = field(default_factory=SecAggSpec)
    privacy: PrivacySpec = field(default_factory=PrivacySpec)
    evidence: EvidenceSpec = field(default_factory=EvidenceSpec)
    name: str = "scenario"

    def peer_overrides(self) -> dict[str, Any]:
        """The PeerConfig settings this scenario gives every peer (by field name)."""
        out: dict[str, Any] = dict(SIM_PEER_SETTINGS)
        for spec in (self.run, self.scoring):
            section = "run" if spec is self.run else "scoring"
            for key, name in sim_fields(section).items():
                out[name] = getattr(spec, key)
        out.update(
            local_steps=self.model.local_steps,
            aggregation=self.aggregation.config(),
            scoring=self.scoring.config(),
            rollout=self.rollout.config(),
            privacy=self.privacy.config(),
        )
        return out

    def to_dict(self) -> dict[str, Any]:
        """The resolved scenario (every default filled in); ``parse_scenario`` accepts it again."""
        agg = dict(self.aggregation.params)
        agg.setdefault("rule", self.aggregation.rule)
        return {
            "run": dataclasses.asdict(self.run),
            "data": dataclasses.asdict(self.data),
            "model": dataclasses.asdict(self.model),
            "topology": dataclasses.asdict(self.topology),
            "aggregation": agg,
            "scoring": {
                "enabled": self.scoring.enabled,
                "val_scoring": self.scoring.val_scoring,
                **({} if self.scoring.mix_guard is None else {"mix_guard": self.scoring.mix_guard}),
                **self.scoring.params,
            },
            "attack": dataclasses.asdict(self.attack),
            "churn": {
                "leave": self.churn.leave,
                "rejoin": self.churn.rejoin,
                "tick_s": self.churn.tick_s,
                "crashes": [dataclasses.asdict(c) for c in self.churn.crashes],
            },
            "sybil": dataclasses.asdict(self.sybil),
            "rollout": {k: v for k, v in dataclasses.asdict(self.rollout.config()).items() if v is not None},
            "secagg": self.secagg.to_dict(),
            "privacy": {k: v for k, v in dataclasses.asdict(self.privacy.config()).items() if v is not None},
            "evidence": self.evidence.to_dict(),
        }

    def replace(self, **sections: Mapping[str, Any]) -> Scenario:
        """A copy with some keys overridden, e.g. ``replace(attack={"kind": "gaussian"})`` (re-validated)."""
        data = self.to_dict()
        for name, table in sections.items():
            data[name] = {**data.get(name, {}), **table}
        return parse_scenario(data, name=self.name)


def parse_scenario(data: Mapping[str, Any], *, name: str = "scenario") -> Scenario:
    """Validate a scenario mapping (parsed TOML); raises :class:`ScenarioError` naming the bad key."""
    for section, table in data.items():
        if section not in SECTIONS:
            raise ScenarioError(f"[{section}]: unknown section; known sections: {', '.join(SECTIONS)}")
        if not isinstance(table, dict):
            raise ScenarioError(f"[{section}]: must be a table")
    topology = TopologySpec.parse(data.get("topology", {}))
    scenario = Scenario(
        run=RunSpec.parse(data.get("run", {})),
        data=DataSpec.parse(data.get("data", {})),
        model=ModelSpec.parse(data.get("model", {})),
        topology=topology,
        aggregation=AggregationSpec.parse(data.get("aggregation", {})),
        scoring=ScoringSpec.parse(data.get("scoring", {})),
        attack=AttackSpec.parse(data.get("attack", {})),
        churn=ChurnSpec.parse(data.get("churn", {}), topology.peers),
        sybil=SybilSpec.parse(data.get("sybil", {})),
        rollout=RolloutSpec.parse(data.get("rollout", {})),
        secagg=SecAggSpec.parse(data.get("secagg", {}), topology.peers),
        privacy=PrivacySpec.parse(
            data.get("privacy", {}), _get(data.get("run", {}), "run", "rounds", int, 20)
        ),
        evidence=EvidenceSpec.parse(data.get("evidence", {})),
        name=name,
    )
    n_bad = scenario.attack.count(topology.peers)
    if scenario.attack.kind != "none" and n_bad == 0:
        raise ScenarioError(
            f"[attack] fraction: {scenario.attack.fraction} of {topology.peers} peers is no attacker; "
            'raise it or use kind = "none"'
        )
    if n_bad >= topology.peers:
        raise ScenarioError("[attack] fraction: at least one honest peer is needed")
    return scenario


def scenario_rounds(data: Mapping[str, Any]) -> int:
    """``[run] rounds`` of a raw scenario (its default when absent or not a table)."""
    run = data.get("run", {})
    return _get(run, "run", "rounds", int, 20) if isinstance(run, dict) else 20


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario TOML file."""
    p = Path(path)
    return parse_scenario(read_toml(p, "scenario", ScenarioError), name=p.stem)
