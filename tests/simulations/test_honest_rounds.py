"""simulations/worker_peer.HonestRounds: the honest round a Sybil joins at, from the honest peers' files."""

from __future__ import annotations

import json
from pathlib import Path

import trio
import trio.testing

from p2pfl.sim.plan import make_plan
from p2pfl.sim.scenario import parse_scenario
from p2pfl.sim.worker_peer import HonestRounds

SCENARIO = {
    "run": {"seed": 1, "rounds": 5, "transport": "memory"},
    "topology": {"peers": 4, "kind": "complete"},
    "attack": {"kind": "signflip", "fraction": 0.25},
}


def _write(out: Path, index: int, body: str) -> None:
    d = out / "peers" / str(index)
    d.mkdir(parents=True, exist_ok=True)
    (d / "status.json").write_text(body)


def test_fewest_honest_rounds_read_once_per_period_and_a_bad_file_counts_as_round_0(tmp_path: Path) -> None:
    plan = make_plan(parse_scenario(SCENARIO, name="t"))
    honest = plan.honest
    assert len(honest) == 3
    for i, r in zip(honest, (4, 2, 3), strict=True):
        _write(tmp_path, i, json.dumps({"round": r}))
    seen: list[int] = []

    async def main() -> None:
        reader = HonestRounds(tmp_path, plan, every_s=0.5)
        seen.append(reader())  # 2: the slowest honest peer
        _write(tmp_path, honest[1], json.dumps({"round": 5}))
        seen.append(reader())  # still 2: read again only after the period
        await trio.sleep(0.5)
        seen.append(reader())  # 3
        _write(tmp_path, honest[0], json.dumps({"round": None}))  # a torn or hostile file: round 0
        await trio.sleep(0.5)
        seen.append(reader())
        _write(tmp_path, honest[0], '{"round": Infinity}')
        await trio.sleep(0.5)
        seen.append(reader())
        _write(tmp_path, honest[0], "[1, 2]")
        await trio.sleep(0.5)
        seen.append(reader())
        (tmp_path / "peers" / str(honest[0]) / "status.json").unlink()
        await trio.sleep(0.5)
        seen.append(reader())

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert seen == [2, 2, 3, 0, 0, 0, 0]
