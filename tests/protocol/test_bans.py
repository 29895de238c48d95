"""The ban book's records across a restart: snapshot, the checkpoint's wall clock, restore."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pfl.peer_store import ban_entry, ban_record
from p2pfl.protocol.bans import BanBook, BanEntry
from p2pfl.scoring import ContributionScorer, ScoringConfig


def test_a_snapshot_restored_at_a_later_time_keeps_counts_expiries_and_convictions() -> None:
    book = BanBook(readmit_after_s=100.0)
    book.ban("p", 10.0)
    book.ban("p", 20.0)  # a repeat: 200 s from 20
    book.ban("q", 0.0)  # expires at 100
    book.convict("liar", 50.0, "equivocation")
    snap = book.snapshot(150.0)
    assert snap == (
        BanEntry("liar", 1, 86_400.0 - 100.0, "equivocation"),
        BanEntry("p", 2, 70.0),
        BanEntry("q", 1, 0.0),
    )
    again = BanBook(readmit_after_s=100.0)
    assert sorted(again.restore(snap, 1000.0)) == ["liar", "p"]  # q's ban had run out: only its count
    assert again.snapshot(1000.0) == snap
    assert (again.evictions_of("q"), again.convicted("liar"), again.convicted("p")) == (
        1,
        "equivocation",
        None,
    )
    again.ban("q", 1000.0)  # its next eviction lasts twice as long, as before the restart
    assert again.snapshot(1000.0)[-1] == BanEntry("q", 2, 200.0)


def test_a_restored_eviction_is_readmitted_on_probation_when_it_runs_out() -> None:
    book, scorer = BanBook(readmit_after_s=100.0), ContributionScorer(ScoringConfig())
    for peer in book.restore((BanEntry("p", 1, 30.0), BanEntry("q", 1, 0.0)), 5.0):
        scorer.restore_eviction(peer)
    assert scorer.is_evicted("p") and not scorer.is_evicted("q")
    assert book.readmissions(20.0, scorer) == []
    (readmit,) = book.readmissions(35.0, scorer)
    assert readmit.peer == "p" and scorer.status("p") == "probation"


@given(
    remaining=st.floats(min_value=0.0, max_value=10.0**9, allow_nan=False),
    stamp=st.integers(min_value=0, max_value=2**50),
    down=st.integers(min_value=0, max_value=2**40),
)
def test_the_downtime_counts_towards_the_ban(remaining: float, stamp: int, down: int) -> None:
    record = ban_record(BanEntry("p", 3, remaining, None), stamp)
    back = ban_entry(record, stamp + down)
    assert back.peer == "p" and back.evictions == 3
    assert back.remaining_s == max(0, record.until_ms - stamp - down) / 1000.0
    assert abs(back.remaining_s - max(0.0, remaining - down / 1000.0)) <= 0.001


def test_a_final_eviction_stays_final_over_a_restart() -> None:
    """``readmit_after_s = inf`` (evictions are final) made the ban's end infinite: written as far ahead."""
    book = BanBook(readmit_after_s=float("inf"))
    book.ban("p", 5.0)
    (entry,) = book.snapshot(10.0)
    back = ban_entry(ban_record(entry, 1_000), 2_000)
    again = BanBook(readmit_after_s=float("inf"))
    assert again.restore((back,), 0.0) == ["p"]
    assert back.remaining_s > 10.0**12
