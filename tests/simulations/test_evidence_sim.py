"""The [evidence] prototype in the memory engine (simulations/evidence_sim.py): the scenario section, the
hub's flooding along the topology's links, and a small run with accusing attackers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from p2pfl.scoring.evidence import EvidenceBook, Observation
from p2pfl.sim.engine_memory import run_memory
from p2pfl.sim.evidence_sim import EvidenceHub, EvidenceSpec
from p2pfl.sim.scenario import ScenarioError, parse_scenario


def _line_hub(n: int, honest: set[int], hops: int, accuse: bool = False) -> EvidenceHub:
    ids = [f"p{i}" for i in range(n)]
    nbrs = [{j for j in (i - 1, i + 1) if 0 <= j < n} for i in range(n)]
    hub = EvidenceHub(EvidenceSpec(enabled=True, hops=hops, accuse=accuse), ids, nbrs, honest)
    for i in honest:
        hub.books[i] = EvidenceBook(ids[i], hub.config)
        hub.rounds[i] = 1
    return hub


def _obs(observer: str, subject: str) -> Observation:
    return Observation(observer, subject, 1, b"\0" * 32, 1, ((0, 100.0),))


def _knows(hub: EvidenceHub, i: int, subject: str) -> bool:
    return hub.books[i].hint(subject, 1, lambda p: 1.0) > 0


def test_the_hub_floods_for_at_most_hops_links_and_marks_the_relay() -> None:
    hub = _line_hub(6, set(range(6)), hops=3)
    hub.publish(1, _obs("p1", "x"))
    assert [_knows(hub, i, "x") for i in range(6)] == [True, True, True, True, True, False]
    # p0 and p2 heard it from the observer itself, p3 through p2 (capped at relayed_trust)
    assert hub.books[2].hint("x", 1, lambda p: 1.0) == 1.0
    assert hub.books[3].hint("x", 1, lambda p: 1.0) == hub.config.relayed_trust


def test_an_attacker_on_the_path_relays_nothing() -> None:
    hub = _line_hub(5, {0, 1, 3, 4}, hops=6)
    hub.publish(1, _obs("p1", "x"))
    assert [_knows(hub, i, "x") for i in (0, 1, 3, 4)] == [True, True, False, False]


def test_the_evidence_section_round_trips_and_rejects_unknown_keys() -> None:
    sc = parse_scenario({"evidence": {"enabled": True, "hops": 3, "max_penalty": 0.3}})
    assert sc.evidence.config().max_penalty == 0.3
    assert parse_scenario(sc.to_dict()).evidence == sc.evidence
    assert not parse_scenario({}).evidence.enabled
    with pytest.raises(ScenarioError):
        parse_scenario({"evidence": {"bogus": 1}})
    with pytest.raises(ScenarioError):
        parse_scenario({"evidence": {"max_penalty": 2.0}})


def test_accusing_attackers_in_a_small_run_evict_no_honest_peer(tmp_path: Path, monkeypatch: Any) -> None:
    accused: list[int] = []
    accuse = EvidenceHub._accuse

    def counting(self: EvidenceHub, index: int) -> None:
        accused.append(index)
        accuse(self, index)

    monkeypatch.setattr(EvidenceHub, "_accuse", counting)
    sc = parse_scenario(
        {
            "run": {"seed": 0, "rounds": 6, "transport": "memory", "time_limit_s": 120},
            "data": {"dataset": "digits", "partition": "dirichlet", "alpha": 0.3},
            "model": {"kind": "logreg", "local_steps": 5},
            "topology": {"peers": 8, "kind": "random-regular", "degree": 4},
            "attack": {"kind": "labelflip", "fraction": 0.25},
            "evidence": {"enabled": True, "accuse": True},
        },
        name="evidence",
    )
    out = trio.run(lambda: run_memory(sc, tmp_path, quiet=True))
    assert not out.timed_out
    assert len(accused) >= 2 * 6  # both attackers accused every round
    honest = {p.index for p in out.plan.peers if p.honest}
    honest_ids = {out.plan.peer_ids[i] for i in honest}
    for i in honest:
        assert out.peers[i]["rounds"] >= 6
        assert not set(out.peers[i]["evicted"]) & honest_ids


@pytest.mark.parametrize(
    "table",
    [{"hops": "3"}, {"hops": 0}, {"enabled": 1}, {"accuse": "yes"}, {"ratio_ok": "x"}, {"ttl_rounds": 0}],
)
def test_a_bad_evidence_value_is_a_scenario_error(table: dict[str, Any]) -> None:
    with pytest.raises(ScenarioError):
        parse_scenario({"evidence": table})
