"""The log rate limiter, on a clock the test chooses."""

from __future__ import annotations

from p2pfl.protocol.logs import RateLimiter


def test_one_line_per_key_per_interval() -> None:
    limit = RateLimiter(10.0)
    assert [limit.allow("a", t) for t in (0.0, 5.0, 9.99, 10.0, 15.0, 20.0)] == [
        True,
        False,
        False,
        True,
        False,
        True,
    ]
    assert limit.allow("b", 5.0)  # keys are independent


def test_the_keys_are_bounded() -> None:
    limit = RateLimiter(10.0, max_keys=2)
    assert limit.allow("a", 0.0) and limit.allow("b", 0.0)
    assert limit.allow("c", 1.0)  # a third key: the memory starts afresh
    assert limit.allow("a", 1.0)
    assert not limit.allow("c", 2.0)
