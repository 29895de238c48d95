"""A scenario's plan: who the peers are, their data, learners and configs (shared by both engines and the
libp2p worker)."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from p2pfl.identity import Identity
from p2pfl.learner import Dataset, NumpySoftmaxLearner
from p2pfl.peer import PeerConfig

from . import sybils, topology
from .data import Split, peer_splits
from .scenario import Scenario

# ------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PeerPlan:
    index: int
    seed: bytes
    honest: bool
    kind: str  # "honest" or the attack kind
    neighbours: tuple[int, ...]
    port: int = 0
    #: a Sybil: joins once every honest peer has done ``join_round`` rounds (0: at the start) and leaves
    #: once every honest peer has done ``leave_round`` (0: never)
    join_round: int = 0
    leave_round: int = 0

    @property
    def identity(self) -> Identity:
        return Identity(self.seed)


@dataclass(frozen=True)
class Plan:
    scenario: Scenario
    peers: tuple[PeerPlan, ...]
    peer_ids: tuple[str, ...]

    @property
    def honest(self) -> list[int]:
        return [p.index for p in self.peers if p.honest]


def make_plan(scenario: Scenario, ports: list[int] | None = None) -> Plan:
    """Topology, attacker placement, Sybils and identities, deterministic in ``[run] seed``."""
    n = scenario.topology.peers
    rng = random.Random(scenario.run.seed)
    topo = scenario.topology
    graph = topology.build(topo.kind, n, rng, degree=topo.degree, fanout=topo.fanout, bridges=topo.bridges)
    bridges = topology.bridge_peers(n, topo.bridges) if topo.kind == "dumbbell" else []
    bad = topology.place_attackers(graph, scenario.attack.count(n), scenario.attack.placement, rng, bridges)
    syb = scenario.sybil
    graph = sybils.extend_graph(graph, [i for i in range(n) if i not in bad], syb, scenario.run.seed)
    plans, ids = [], []
    for i in range(n + syb.count):
        seed = hashlib.blake2b(f"p2pfl-sim:{scenario.run.seed}:{i}".encode(), digest_size=32).digest()
        sybil = i >= n
        plans.append(
            PeerPlan(
                index=i,
                seed=seed,
                honest=i not in bad and not sybil,
                kind=syb.kind if sybil else "honest" if i not in bad else scenario.attack.kind,
                neighbours=tuple(sorted(graph[i])),
                port=ports[i] if ports else 0,
                join_round=syb.join_round if sybil else 0,
                leave_round=syb.leave_round if sybil else 0,
            )
        )
        ids.append(Identity(seed).peer_id)
    return Plan(scenario, tuple(plans), tuple(ids))


def total_peers(scenario: Scenario) -> int:
    """Base peers plus Sybils."""
    return scenario.topology.peers + scenario.sybil.count


def load_splits(scenario: Scenario) -> list[Split]:
    """One split per planned peer: the base peers' partition, then each Sybil's (see simulations.sybils)."""
    d = scenario.data
    base = peer_splits(
        d.dataset,
        scenario.topology.peers,
        partition_kind=d.partition,
        alpha=d.alpha,
        classes_per_peer=d.classes_per_peer,
        test_fraction=d.test_fraction,
        val_fraction=d.val_fraction,
        seed=scenario.run.seed,
        synthetic_samples=d.synthetic_samples,
    )
    if not scenario.sybil.count:
        return base
    honest = make_plan(scenario).honest
    return base + [sybils.sybil_split(base, honest, k, scenario.sybil) for k in range(scenario.sybil.count)]


def save_splits(splits: list[Split], path: Path) -> None:
    """All peers' data in one ``.npz`` so worker processes load arrays instead of importing scikit-learn."""
    arrays: dict[str, Any] = {
        "test_x": splits[0].test.x,
        "test_y": splits[0].test.y,
        "meta": np.array([splits[0].n_classes, splits[0].n_features]),
    }
    for i, s in enumerate(splits):
        arrays |= {
            f"{i}_train_x": s.train.x,
            f"{i}_train_y": s.train.y,
            f"{i}_val_x": s.val.x,
            f"{i}_val_y": s.val.y,
        }
    np.savez(path, **arrays)


def load_split(path: Path, index: int) -> Split:
    with np.load(path) as z:
        n_classes, n_features = (int(v) for v in z["meta"])
        return Split(
            train=Dataset(z[f"{index}_train_x"], z[f"{index}_train_y"]),
            val=Dataset(z[f"{index}_val_x"], z[f"{index}_val_y"]),
            test=Dataset(z["test_x"], z["test_y"]),
            n_classes=n_classes,
            n_features=n_features,
        )


def build_learner(scenario: Scenario, split: Split, index: int) -> NumpySoftmaxLearner:
    m = scenario.model
    return NumpySoftmaxLearner(
        split.train,
        split.val,
        split.n_classes,
        hidden=m.hidden if m.kind == "mlp" else 0,
        lr=m.lr,
        momentum=m.momentum,
        batch_size=m.batch_size,
        weight_decay=m.weight_decay,
        lr_decay=m.lr_decay,
        lr_min=m.lr_min,
        prox=m.prox,
        seed=scenario.run.seed * 100_003 + index,
    )


def peer_config(
    scenario: Scenario,
    *,
    state_dir: Path | None,
    listen: str = "/ip4/127.0.0.1/tcp/0",
    static_peers: tuple[str, ...] = (),
    status_interval_s: float = 0.0,
) -> PeerConfig:
    base = PeerConfig(
        network_id=scenario.run.network_id,
        listen=listen,
        static_peers=static_peers,
        state_dir=state_dir,
        status_interval_s=status_interval_s,
    )
    return dataclasses.replace(base, **scenario.peer_overrides())


def flat(params: dict[str, npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    return np.concatenate([params[k].reshape(-1) for k in sorted(params)]).astype(np.float32)
