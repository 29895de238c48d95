"""GroupRound end to end over a fake network: the mean, dropouts, the threshold, bytes, and what a masked
vector reveals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from p2pfl.secagg import FixedPoint, Phase, SecAggError
from p2pfl.secagg.messages import decode

from .harness import Net


def assert_mean(net: Net, survivors: list[int], among: list[int] | None = None) -> None:
    """Every live member (of ``among``) finished with the plain mean of exactly ``survivors``, within the
    stated error."""
    expected = net.plain_mean(survivors)
    for k in among if among is not None else net.alive():
        r = net.rounds[k]
        assert r.phase == Phase.DONE, (k, r.failure, r.failure_message)
        assert r.result is not None
        assert list(r.result.survivors) == survivors
        assert np.max(np.abs(r.result.mean.astype(np.float64) - expected)) <= net.fixed.max_error()


def test_eight_members_compute_the_plain_mean() -> None:
    net = Net().run()
    assert_mean(net, list(range(8)))
    assert all(not r.rejections for r in net.rounds.values())


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        arrays(np.float32, 16, elements=st.floats(-40, 40, width=32, allow_nan=False)), min_size=8, max_size=8
    ),
    st.sampled_from(
        [FixedPoint(), FixedPoint(scale_bits=24, bound=8.0), FixedPoint(scale_bits=8, bound=1000.0)]
    ),
)
def test_mean_equals_plain_mean_within_the_stated_error(xs: list[np.ndarray], fixed: FixedPoint) -> None:
    """Inputs beyond the bound (up to 40 against 8 or 16) are clipped: the mean is that of the clipped
    inputs, within FixedPoint.max_error()."""
    net = Net(dim=16, fixed=fixed, xs=dict(enumerate(xs))).run()
    assert_mean(net, list(range(8)))


@pytest.mark.parametrize("dropped", [[3], [0, 6]])
@pytest.mark.parametrize("phase", [Phase.MASKED_INPUT, Phase.CONSISTENCY])
def test_one_or_two_members_dropped_mid_round_are_recovered(dropped: list[int], phase: Phase) -> None:
    """Members that shared their keys and then vanish (before sending their masked input, or after it but
    before the consistency check) are recovered: their masks are removed through the survivors' shares."""
    net = Net(crash=dict.fromkeys(dropped, phase)).run()
    if phase == Phase.MASKED_INPUT:
        survivors = [k for k in range(8) if k not in dropped]
        assert_mean(net, survivors)
        assert list(net.rounds[net.alive()[0]].result.recovered) == dropped  # type: ignore[union-attr]
    else:  # their masked inputs arrived: they are in the mean, and the rest finish without their views
        assert_mean(net, list(range(8)))


def test_members_dropping_in_the_unmask_phase_do_not_stop_the_others() -> None:
    net = Net(crash={1: Phase.UNMASK, 5: Phase.UNMASK, 7: Phase.UNMASK}).run()
    assert_mean(net, list(range(8)))


def test_a_member_missing_from_the_start_is_left_out() -> None:
    net = Net(crash={2: Phase.ADVERTISE}).run()
    assert_mean(net, [k for k in range(8) if k != 2])


def test_below_the_threshold_the_round_fails_clearly_and_reveals_no_mean() -> None:
    """Four of eight drop after sharing keys: 4 < 5 survivors, every live member fails with a reason."""
    net = Net(crash=dict.fromkeys([0, 2, 4, 6], Phase.MASKED_INPUT)).run()
    for k in net.alive():
        r = net.rounds[k]
        assert r.phase == Phase.FAILED
        assert r.failure == "below_threshold"
        assert r.result is None


def test_threshold_must_be_a_majority() -> None:
    with pytest.raises(SecAggError):
        Net(t=4)


def test_bytes_per_member_stay_below_twice_the_plain_exchange() -> None:
    """The plain exchange: each member sends its float32 model to the 7 others (4 * dim * 7 bytes, without
    any envelope). Secure aggregation adds keys, shares, views and revealed shares."""
    dim = 2410  # the digits MLP of the default scenario (64-32-10)
    net = Net(dim=dim).run()
    plain = 4 * dim * 7
    ratios = [r.bytes_sent / plain for r in net.rounds.values()]
    assert max(ratios) <= 2.0, ratios
    assert min(ratios) >= 1.0  # the masked vector alone is as large as the model


def _masked_vector(net: Net, member: int) -> bytes:
    for src, _dst, data in net.delivered:
        if src == member:
            msg = decode(data, group=net.spec.group, members=net.spec.members, dim=net.spec.dim)
            if msg.kind == "masked":
                return msg.body.vector  # type: ignore[union-attr]
    raise AssertionError("no masked vector")


@pytest.mark.parametrize("value", [0.0, 0.5, -16.0])
def test_a_masked_vector_alone_is_uniform_in_the_ring(value: float) -> None:
    """A constant model (the least random input there is) masked: its bytes pass a chi-square test of
    uniformity (256 bins, 262 144 bytes, fixed seed; the 1e-4 critical value of chi2(255) is 358.5), and so
    do the low bits (a biased rounding or a missing mask would show there first)."""
    dim = 65_536
    xs = {k: np.full(dim, value, np.float32) for k in range(8)}
    net = Net(dim=dim, xs=xs, n=8).run()
    y = _masked_vector(net, 3)
    counts = np.bincount(np.frombuffer(y, np.uint8), minlength=256)
    expected = len(y) / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 358.5, chi2
    low = np.frombuffer(y, "<u4") & 0xFF
    low_counts = np.bincount(low, minlength=256)
    chi2_low = float(((low_counts - dim / 256) ** 2 / (dim / 256)).sum())
    assert chi2_low < 358.5, chi2_low
    assert_mean(net, list(range(8)))
