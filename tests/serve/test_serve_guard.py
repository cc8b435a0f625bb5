"""The rate guard: clean statistics, thresholds, verdicts, token buckets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from entroguard.serve.guard import (
    ClientBudgets,
    GuardConfig,
    RateGuard,
    TokenBucket,
    clean_payload_stats,
    threshold_from_stats,
    validate_clean_stats,
)


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_clean_payload_stats_layout_and_values():
    sizes = np.arange(1, 1001)  # 1..1000 bytes
    stats = clean_payload_stats(sizes)
    assert set(stats) == {"n", "mean", "std", "quantiles", "max"}
    assert set(stats["quantiles"]) == {"0.5", "0.9", "0.99", "0.999"}
    assert stats["n"] == 1000 and isinstance(stats["n"], int)
    assert stats["max"] == 1000 and isinstance(stats["max"], int)
    assert stats["mean"] == pytest.approx(500.5)
    assert stats["std"] == pytest.approx(np.std(sizes))
    for key, value in stats["quantiles"].items():
        assert value == pytest.approx(np.quantile(sizes, float(key)))
        assert isinstance(value, float)
    assert validate_clean_stats(stats) == stats


@pytest.mark.parametrize("bad", [np.array([]), np.array([1.0, np.nan]), np.array([-1.0])])
def test_clean_payload_stats_rejects_bad_sizes(bad):
    with pytest.raises(ValueError):
        clean_payload_stats(bad)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.pop("quantiles"),
        lambda s: s.update(quantiles={"x": 1.0}),
        lambda s: s.update(quantiles={"1.5": 1.0}),
        lambda s: s.update(mean=float("nan")),
        lambda s: s.update(n=0),
        lambda s: s.update(std="a"),
    ],
)
def test_validate_clean_stats_names_the_problem(mutate):
    stats = clean_payload_stats(np.arange(10))
    mutate(stats)
    with pytest.raises(ValueError, match="clean_payload"):
        validate_clean_stats(stats)


def test_default_threshold_is_q999_times_1_10():
    stats = clean_payload_stats(np.arange(1, 10_001))
    guard = RateGuard(stats)
    assert guard.threshold_bytes == pytest.approx(stats["quantiles"]["0.999"] * 1.10)
    assert guard.config.mode == "flag"


def test_threshold_choices():
    stats = clean_payload_stats(np.arange(1, 101))
    assert threshold_from_stats(stats, 0.5, 2.0) == pytest.approx(2 * stats["quantiles"]["0.5"])
    assert threshold_from_stats(stats, 1.0, 1.0) == stats["max"]
    with pytest.raises(ValueError, match="0.999"):
        threshold_from_stats(stats, 0.95, 1.0)


@pytest.mark.parametrize("mode", ["flag", "refuse"])
def test_verdicts(mode):
    stats = clean_payload_stats(np.full(100, 100.0))
    guard = RateGuard(stats, GuardConfig(mode=mode, quantile=0.5, multiple=1.5))
    assert guard.threshold_bytes == 150
    assert guard.score(150).decision == "pass"
    over = guard.score(151)
    assert over.decision == mode
    assert over.score == pytest.approx(151 / 150)
    assert over.to_dict() == {"decision": mode, "score": round(151 / 150, 4),
                              "threshold_bytes": 150.0, "client_alarm": False,
                              "cusum": None}  # fmt: skip


def test_off_mode_passes_everything_and_needs_no_stats():
    guard = RateGuard(None, GuardConfig(mode="off"))
    assert guard.score(10**9).decision == "pass"
    assert guard.describe()["threshold_bytes"] is None
    assert guard.score(5).to_dict()["threshold_bytes"] is None
    with pytest.raises(ValueError, match="clean payload"):
        RateGuard(None, GuardConfig(mode="flag"))


@pytest.mark.parametrize(
    "kwargs",
    [{"mode": "block"}, {"multiple": 0}, {"multiple": math.nan}, {"budget_bytes_per_s": -1},
     {"burst_bytes": 0}, {"max_clients": 0}],
)  # fmt: skip
def test_guard_config_validation(kwargs):
    with pytest.raises(ValueError):
        GuardConfig(**kwargs)


def test_token_bucket_refills_at_rate_up_to_burst():
    clock = FakeClock()
    bucket = TokenBucket(rate=100.0, burst=500.0, clock=clock)
    assert bucket.consume(400) == 0.0
    assert bucket.tokens == pytest.approx(100)
    wait = bucket.consume(300)  # needs 200 more bytes at 100 B/s
    assert wait == pytest.approx(2.0)
    assert bucket.tokens == pytest.approx(100)  # a refused request takes nothing
    clock.t += 2.0
    assert bucket.consume(300) == 0.0
    clock.t += 1000.0
    assert bucket.tokens == pytest.approx(500)  # capped at the burst
    assert bucket.consume(501) == math.inf  # can never fit
    clock.t -= 50.0  # a clock going backwards never adds tokens
    assert bucket.tokens == pytest.approx(500)


def test_client_budgets_are_per_client_and_bounded():
    clock = FakeClock()
    budgets = ClientBudgets(rate=10.0, burst=100.0, max_clients=2, clock=clock)
    assert budgets.consume("a", 100) == 0.0
    assert budgets.consume("a", 10) == pytest.approx(1.0)
    assert budgets.consume("b", 100) == 0.0  # b has its own bucket
    budgets.consume("c", 1)  # evicts the least recently used (a)
    assert len(budgets) == 2
    off = ClientBudgets(rate=0.0, burst=0.0)
    assert not off.enabled and off.consume("x", 10**12) == 0.0
