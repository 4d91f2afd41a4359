"""Rate limiter maths against client-go's definitions."""

from __future__ import annotations

import pytest

from kaito.runtime.ratelimiter import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    default_controller_rate_limiter,
)


def test_exponential_per_item_doubles_from_5ms_and_caps_at_1000s() -> None:
    rl = ItemExponentialFailureRateLimiter(0.005, 1000.0)
    delays = [rl.when("a") for _ in range(20)]
    assert delays[:4] == pytest.approx([0.005, 0.01, 0.02, 0.04])
    assert delays[17] == pytest.approx(0.005 * 2**17)  # 655.36 s
    assert delays[18] == 1000.0
    assert rl.when("b") == 0.005  # per item
    rl.forget("a")
    assert rl.when("a") == 0.005
    assert rl.num_requeues("a") == 1


def test_exponential_saturates_without_overflow() -> None:
    rl = ItemExponentialFailureRateLimiter(0.005, 1000.0)
    for _ in range(200):
        delay = rl.when("x")
    assert delay == 1000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_burst_then_paces_at_qps() -> None:
    clock = FakeClock()
    rl = BucketRateLimiter(10.0, 100, clock)
    assert all(rl.when(i) == 0.0 for i in range(100))
    assert rl.when("101") == pytest.approx(0.1)
    assert rl.when("102") == pytest.approx(0.2)
    clock.now = 1.0  # ten tokens refilled, two already promised
    assert rl.when("x") == 0.0  # 10 refilled - 2 owed = 8 left
    clock.now = 100.0  # refills only up to the burst
    for _ in range(100):
        assert rl.when("y") == 0.0
    assert rl.when("z") > 0


def test_default_controller_limiter_is_max_of_both() -> None:
    clock = FakeClock()
    rl = default_controller_rate_limiter(clock)
    assert isinstance(rl, MaxOfRateLimiter)
    # same item failing: exponential dominates once it exceeds the bucket's delay
    delays = [rl.when("same") for _ in range(12)]
    assert delays[0] == pytest.approx(0.005)
    assert delays[11] == pytest.approx(0.005 * 2**11)
    # many distinct items: after the burst of 100, the 10 qps bucket dominates
    for i in range(88):
        rl.when(f"item-{i}")
    assert rl.when("one-more") == pytest.approx(0.1)
    rl.forget("same")
    assert rl.num_requeues("same") == 0
