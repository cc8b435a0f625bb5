"""The report's 95 % confidence intervals: Wilson for top-1, a seeded bootstrap for bytes, and
both in the report's tables."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from entroguard.report.html import write_report
from entroguard.report.stats import (
    bootstrap_interval,
    change_interval,
    mean_interval,
    wilson_interval,
)


@pytest.mark.parametrize(("hits", "n", "low", "high"), [
    (81, 100, 0.7222, 0.8749),  # Wilson (1927) by hand: p 0.81, z 1.96
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
])  # fmt: skip
def test_wilson_matches_the_closed_form(hits, n, low, high):
    lo, hi = wilson_interval(hits, n)
    assert math.isclose(lo, low, abs_tol=1e-4) and math.isclose(hi, high, abs_tol=1e-4)


def test_wilson_of_nothing_is_everything():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_bootstrap_is_seeded_and_covers_the_mean():
    x = np.random.default_rng(1).gamma(2.0, 50.0, 64)
    a, b = mean_interval(x), mean_interval(x)
    assert a == b and a[0] < x.mean() < a[1]
    assert mean_interval(x, seed=2) != a
    # the half-width shrinks like 1/sqrt(n): 16x the images, about a quarter of the width
    wide = np.subtract(*mean_interval(x[:16])[::-1])
    narrow = np.subtract(*mean_interval(np.tile(x[:16], 16))[::-1])
    assert 0.15 < narrow / wide < 0.4


def test_a_paired_change_interval_sees_a_constant_ratio_exactly():
    clean = np.random.default_rng(0).uniform(50, 150, 40)
    low, high = change_interval(clean, 1.25 * clean)
    assert math.isclose(low, 25.0) and math.isclose(high, 25.0)
    with pytest.raises(ValueError, match="paired"):
        change_interval(clean, clean[:-1])


def test_a_constant_statistic_has_no_width():
    assert bootstrap_interval(lambda i: 3.0, 10) == (3.0, 3.0)


def test_the_report_tables_carry_intervals(tiny_campaign):
    html = write_report(tiny_campaign).read_text(encoding="utf-8")
    clean = html[html.index('id="clean"') : html.index('id="corruptions"')]
    intervals = re.findall(r'<span class="ci">\[([^,]+), ([^\]]+)\]</span>', clean)
    assert len(intervals) == 4  # top-1 and payload of each of the two models
    assert "Wilson" in clean and "bootstrap" in clean
    per_model = html[html.index("Entropy attack per model") : html.index('id="distributions"')]
    assert per_model.count('class="ci"') == 8  # rate and top-1 at eps 8 and 32, two models
    assert "paired bootstrap" in per_model
