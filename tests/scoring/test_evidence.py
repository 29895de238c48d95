"""Evidence relayed as hints (issue 16): per-class observations, the receiver's bounded weight factor, and
the adaptive attack on it (a coalition of accusers against an honest peer)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.errors import AggregationError, ConfigError
from p2pfl.scoring import ContributionScorer, ScoringConfig
from p2pfl.scoring.evidence import (
    EvidenceBook,
    EvidenceConfig,
    Observation,
    Streaks,
    assess,
    class_losses,
    severity,
)

CFG = EvidenceConfig(enabled=True, ratio_ok=2.0, ratio_bad=4.0, max_penalty=0.5, ttl_rounds=3)
D32 = b"\x01" * 32


def obs(
    observer: str, subject: str, ratio: float = 100.0, *, seq: int = 1, rnd: int = 1, cls: int = 3
) -> Observation:
    return Observation(observer, subject, seq, D32, rnd, ((cls, ratio),))


def full(_: str) -> float:
    return 1.0


# ------------------------------------------------------------------------------------- observer side


def test_class_losses_per_class_and_a_zero_probability_is_infinite() -> None:
    proba = np.array([[0.5, 0.5], [0.9, 0.1], [0.0, 1.0]])
    out = class_losses(proba, np.array([0, 0, 0]))
    assert math.isinf(out[0][0]) and out[0][1] == 3
    out = class_losses(proba[:2], np.array([0, 1]))
    assert out[0] == pytest.approx((-math.log(0.5), 1))
    assert out[1] == pytest.approx((-math.log(0.1), 1))
    with pytest.raises(AggregationError):
        class_losses(proba, np.array([0, 1]))


def test_assess_accuses_only_the_model_far_above_the_class_median() -> None:
    own = {0: (0.2, 10), 1: (0.3, 10), 2: (5.0, 1)}  # class 2: too few samples to say anything
    models = {
        "honest1": (4, D32, {0: (0.3, 10), 1: (0.4, 10), 2: (50.0, 1)}),
        "honest2": (4, D32, {0: (0.25, 10), 1: (0.5, 10), 2: (50.0, 1)}),
        "flipper": (7, b"\x02" * 32, {0: (3.0, 10), 1: (0.4, 10), 2: (50.0, 1)}),
    }
    out = assess("me", 9, own, models, CFG)
    assert [o.subject for o in out] == ["flipper"]
    o = out[0]
    assert (o.observer, o.seq, o.digest, o.round) == ("me", 7, b"\x02" * 32, 9)
    assert [c for c, _ in o.classes] == [0]
    assert o.classes[0][1] == pytest.approx(3.0 / 0.275)


def test_severity_ramps_between_ok_and_bad() -> None:
    assert severity(((0, 2.0),), CFG) == 0.0
    assert severity(((0, 3.0), (1, 1.0)), CFG) == pytest.approx(0.5)
    assert severity(((0, 1e9),), CFG) == 1.0
    assert severity(((0, math.nan),), CFG) == 0.0
    assert severity((), CFG) == 0.0


def test_config_is_validated() -> None:
    for bad in (
        {"ratio_ok": 4.0, "ratio_bad": 2.0},
        {"max_penalty": 1.5},
        {"ttl_rounds": 0},
        {"loss_floor": 0.0},
    ):
        with pytest.raises(ConfigError):
            EvidenceConfig(**bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- receiver side


def test_one_trusted_observation_down_weights_by_at_most_max_penalty() -> None:
    book = EvidenceBook("me", CFG)
    assert book.factor("x", 1, full) == 1.0
    assert book.record(obs("o", "x"), 1) == "kept"
    assert book.factor("x", 1, full) == pytest.approx(0.5)
    assert book.factor("x", 1, lambda p: 0.4) == pytest.approx(1 - 0.5 * 0.4)
    assert book.factor("x", 1, lambda p: 0.0) == 1.0  # an untrusted observer is no hint at all


def test_a_hint_is_not_a_vote_a_hundred_accusers_weigh_what_the_most_trusted_one_does() -> None:
    book = EvidenceBook("me", CFG)
    book.record(obs("o0", "x", ratio=3.0), 1)  # severity 0.5
    one = book.factor("x", 1, full)
    for i in range(1, 100):
        book.record(obs(f"o{i}", "x", ratio=3.0), 1)
    assert book.factor("x", 1, full) == pytest.approx(one)


def test_relayed_observations_are_capped_by_relayed_trust_and_the_relay() -> None:
    book = EvidenceBook("me", EvidenceConfig(enabled=True, relayed_trust=0.5, max_penalty=1.0))
    book.record(obs("far", "x"), 1, relay="bridge")
    assert book.hint("x", 1, full) == pytest.approx(0.5)
    assert book.hint("x", 1, lambda p: 0.2 if p == "bridge" else 1.0) == pytest.approx(0.2)


def test_refuted_on_a_class_the_receiver_checked_itself() -> None:
    book = EvidenceBook("me", CFG)
    book.record(obs("o", "x", cls=3), 1)
    assert book.factor("x", 1, full, checked={3: 1.1}) == 1.0  # the receiver saw no loss on class 3
    assert book.factor("x", 1, full, checked={5: 1.1}) == pytest.approx(0.5)  # it cannot check class 3
    assert book.factor("x", 1, full, checked={3: 9.0}) == pytest.approx(0.5)


def test_rejections_expiry_and_replacement() -> None:
    book = EvidenceBook("me", CFG)
    assert book.record(obs("x", "x"), 1) == "self"
    assert book.record(obs("o", "me"), 1) == "about_me"
    assert book.record(obs("o", "x", ratio=1.5), 1) == "no_evidence"
    assert book.record(obs("o", "x", seq=5), 1) == "kept"
    assert book.record(obs("o", "x", seq=4), 2) == "older"
    assert book.factor("x", 3, full) < 1.0
    assert book.factor("x", 4, full) == 1.0  # ttl 3 rounds after it was received
    book.prune(4)
    assert book.record(obs("o", "x", seq=4), 4) == "kept"  # pruned: an older version is news again
    book.forget("o")
    assert book.factor("x", 4, full) == 1.0


def test_an_observer_holds_at_most_max_subjects() -> None:
    book = EvidenceBook("me", EvidenceConfig(enabled=True, max_subjects=3))
    for i in range(10):
        book.record(obs("o", f"s{i}"), 1)
    assert [book.factor(f"s{i}", 1, full) < 1.0 for i in range(10)] == [False] * 7 + [True] * 3


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0.0, 1.0),
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "me", "x"]),
            st.sampled_from(["x", "y", "me"]),
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(0, 5),
            st.one_of(st.none(), st.sampled_from(["a", "r"])),
        ),
        max_size=40,
    ),
    st.floats(allow_nan=True, allow_infinity=True),
)
def test_the_factor_is_always_within_its_bound(
    penalty: float, items: list[tuple[str, str, float, int, str | None]], trust_value: float
) -> None:
    cfg = EvidenceConfig(enabled=True, max_penalty=penalty)
    book = EvidenceBook("me", cfg)
    for observer, subject, ratio, rnd, relay in items:
        book.record(Observation(observer, subject, rnd, D32, rnd, ((0, ratio),)), rnd, relay)
    for subject in ("x", "y", "me"):
        f = book.factor(subject, 5, lambda p: trust_value)
        assert 1.0 - penalty - 1e-12 <= f <= 1.0


# ------------------------------------------------------------------- the adaptive attack on the scorer


def _round(
    rng: np.random.Generator, honest: list[str]
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    before = np.zeros(20)
    after = before + rng.normal(0, 0.1, 20)
    return before, after, {p: after + rng.normal(0, 0.1, 20) for p in honest}


def test_a_coalition_accusing_an_honest_peer_neither_evicts_it_nor_cuts_its_weight_past_the_bound() -> None:
    """Every round 50 accusers (as trusted as anyone can be, full severity, on classes the receiver cannot
    check) accuse the honest peer ``victim``: its score, reputation and status do not move, and its weight is
    exactly the bounded fraction of what it would be without the evidence."""
    rng = np.random.default_rng(0)
    honest = ["h1", "h2", "h3", "victim"]
    plain = ContributionScorer(ScoringConfig())
    hinted = ContributionScorer(ScoringConfig())
    book = EvidenceBook("me", CFG)
    now = [0]
    hinted.weight_hint = lambda p: book.factor(p, now[0], full, checked={0: 1.0})
    for rnd in range(1, 31):
        now[0] = rnd
        for i in range(50):
            book.record(obs(f"sybil{i}", "victim", ratio=1e9, seq=rnd, rnd=rnd, cls=7), rnd)
        before, after, models = _round(rng, honest)
        plain.begin_round()
        hinted.begin_round()
        a = plain.evaluate(before, after, models, after)
        b = hinted.evaluate(before, after, models, after)
        assert a == b  # evidence never touches scores, reputation or status
        w_plain = plain.weights_for(honest)
        w_hinted = hinted.weights_for(honest)
        assert w_hinted[:3].tolist() == w_plain[:3].tolist()
        assert w_hinted[3] == pytest.approx(w_plain[3] * (1 - CFG.max_penalty))
        assert hinted.status("victim") == "active"
    assert hinted.evicted() == set()


def test_a_hint_scales_only_its_peers_weight() -> None:
    s = ContributionScorer(ScoringConfig())
    w = s.weights_for(["a", "b"]).tolist()
    s.weight_hint = lambda p: 0.25 if p == "b" else 1.0
    assert s.weights_for(["a", "b"]).tolist() == [w[0], w[1] * 0.25]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -3.0, 7.0])
def test_a_hint_outside_the_unit_interval_is_clamped_or_ignored(bad: float) -> None:
    s = ContributionScorer(ScoringConfig())
    w = s.weights_for(["a", "b"]).tolist()
    s.weight_hint = lambda p: bad if p == "b" else 1.0
    got = s.weights_for(["a", "b"]).tolist()
    expected = {math.nan: w[1], math.inf: w[1], -3.0: 0.0, 7.0: w[1]}[bad]
    assert got == [w[0], expected]


def test_streaks_publish_only_after_persist_versions_consecutive_versions() -> None:
    s = Streaks(EvidenceConfig(enabled=True, persist_versions=3))
    hit = [obs("me", "x", seq=1)]
    assert s.filter({"x": 1, "y": 1}, hit) == []
    assert s.filter({"x": 1}, hit) == []  # the same version assessed again counts once
    assert s.filter({"x": 2}, [obs("me", "x", seq=2)]) == []
    assert s.filter({"x": 3}, [obs("me", "x", seq=3)]) == [obs("me", "x", seq=3)]
    assert s.filter({"x": 4}, []) == []  # one clean version resets the run
    assert s.filter({"x": 5}, [obs("me", "x", seq=5)]) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("persist_versions", 0),
        ("max_subjects", 0),
        ("min_samples", 0),
        ("ttl_rounds", 0),
        ("ratio_bad", math.inf),
    ],
)
def test_a_bad_value_is_refused_under_its_own_key(key: str, value: float) -> None:
    """The error names the key that is wrong (it named ``ttl_rounds`` for the other counts), and an infinite
    ``ratio_bad`` (no observation could ever reach full evidence) is refused like the other thresholds."""
    with pytest.raises(ConfigError) as info:
        EvidenceConfig(**{key: value})  # type: ignore[arg-type]
    assert info.value.section == "evidence" and info.value.key == key
