"""simulations.attack_metrics: issue 16's hold bound counted from each pair's first contact, and the
attackers' share of the honest peers' links."""

from __future__ import annotations

from simulations.attack_metrics import held_after_contact, link_share


def _peer(pid: str, rows: list[dict[str, object]]) -> dict[str, object]:
    return {"id": pid, "trace": [{"round": r, **row} for r, row in enumerate(rows, start=1)]}


def test_each_pair_gets_ten_rounds_from_its_own_first_contact() -> None:
    # h1 meets a at round 1 and still gives it 0.2 at round 11: over. h2 meets a only at round 8 (link
    # rotation): its 0.3 at round 12 is within its ten rounds, its 0.05 at round 18 is held.
    h1 = _peer("h1", [{"mix": {"a": 0.3}}] + [{}] * 9 + [{"mix": {"a": 0.2}}])
    h2 = _peer("h2", [{}] * 7 + [{"mix": {"a": 0.4}}] + [{}] * 3 + [{"mix": {"a": 0.3}}] + [{}] * 5
               + [{"mix": {"a": 0.05, "h1": 0.9}}])  # fmt: skip
    held = held_after_contact([h1, h2], {"a"})
    assert held == {"rounds": 10, "share_max": 0.2, "pairs": 2, "over": 1}
    assert held_after_contact([h2], {"a"})["over"] == 0
    assert held_after_contact([], {"a"})["share_max"] is None


def test_link_share_counts_rows_after_round_four() -> None:
    rows = [{"linked": [4, 4]}] * 4 + [{"linked": [4, 1]}, {"linked": [4, 2]}, {"linked": [0, 0]}, {}]
    assert link_share([_peer("h", rows)]) == {"attacker_share": 0.375, "exposed": 0.5}
    assert link_share([_peer("h", [{}])]) == {"attacker_share": None, "exposed": None}
