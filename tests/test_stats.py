"""dynsparse.stats: t quantiles against tables and closed forms, summaries against hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dynsparse.stats import (
    format_mean_ci,
    paired_difference,
    summarize,
    summarize_groups,
    t_quantile,
    t_two_sided_probability,
)

# Student t table (two-sided 95 %, i.e. p = 0.975), 3 decimals as printed in textbooks.
T_TABLE_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 9: 2.262,
               10: 2.228, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}  # fmt: skip


@pytest.mark.parametrize(("df", "expected"), sorted(T_TABLE_975.items()))
def test_t_quantile_matches_the_table(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [(0.95, 1, 6.314), (0.95, 4, 2.132), (0.995, 2, 9.925), (0.995, 5, 4.032), (0.9, 8, 1.397)],
)
def test_t_quantile_other_levels(p: float, df: int, expected: float) -> None:
    assert t_quantile(p, df) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_closed_forms_for_one_and_two_df() -> None:
    # df = 1 is Cauchy: tan(π(p − ½)); df = 2: q·√(2 / (1 − q²)) with q = 2p − 1.
    for p in (0.6, 0.9, 0.975, 0.999):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
        q = 2 * p - 1
        assert t_quantile(p, 2) == pytest.approx(q * math.sqrt(2 / (1 - q * q)), rel=1e-9)


def test_t_quantile_approaches_the_normal_quantile() -> None:
    assert t_quantile(0.975, 100_000) == pytest.approx(1.959964, abs=1e-4)
    assert t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("df", [3, 4, 7, 12])
def test_two_sided_probability_matches_integrating_the_density(df: int) -> None:
    t = 2.1
    x = np.linspace(-t, t, 200_001)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_norm - (df + 1) / 2 * np.log1p(x * x / df))
    integral = float(np.sum((density[1:] + density[:-1]) / 2 * np.diff(x)))
    assert t_two_sided_probability(t, df) == pytest.approx(integral, abs=1e-8)


@pytest.mark.parametrize("df", [0, -1, 1.5, True])
def test_t_quantile_rejects_bad_degrees_of_freedom(df: object) -> None:
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(0.975, df)  # type: ignore[arg-type]


@pytest.mark.parametrize("p", [0.4, 1.0, 1.2])
def test_t_quantile_rejects_bad_levels(p: float) -> None:
    with pytest.raises(ValueError, match="p must be"):
        t_quantile(p, 3)


def test_summary_of_three_seeds_by_hand() -> None:
    # mean 98, deviations −1, 0, 1 → s² = 2/2 = 1; half-width t(0.975, 2)·1/√3 = 4.302653/1.732051
    s = summarize([97.0, 98.0, 99.0])
    assert s.n == 3
    assert s.mean == pytest.approx(98.0)
    assert s.std == pytest.approx(1.0)
    assert s.half_width == pytest.approx(2.484138, abs=1e-6)
    assert (s.ci_low, s.ci_high) == pytest.approx((95.515862, 100.484138), abs=1e-6)
    assert (s.min, s.max) == (97.0, 99.0)


def test_summary_of_four_seeds_by_hand() -> None:
    # mean 2.5, s² = (2.25 + 0.25 + 0.25 + 2.25)/3 = 5/3, half = 3.182446·√(5/3)/2 = 2.054260
    s = summarize([4.0, 1.0, 3.0, 2.0])
    assert s.mean == pytest.approx(2.5)
    assert s.std == pytest.approx(math.sqrt(5 / 3))
    assert s.half_width == pytest.approx(2.054260, abs=1e-6)
    assert s.as_dict()["n"] == 4


def test_one_seed_has_no_spread_and_no_interval() -> None:
    s = summarize([98.2])
    assert (s.n, s.mean, s.min, s.max) == (1, 98.2, 98.2, 98.2)
    assert math.isnan(s.std) and math.isnan(s.ci_low) and math.isnan(s.ci_high)


def test_identical_values_give_a_zero_width_interval() -> None:
    s = summarize([0.5, 0.5])
    assert s.std == 0.0 and s.ci_low == s.ci_high == 0.5


@pytest.mark.parametrize(("values", "match"), [([], "no values"), ([1.0, math.nan], "finite")])
def test_summary_rejects_empty_and_non_finite(values: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        summarize(values, what="fc/dense test_accuracy")


def test_summarize_groups_keeps_order_and_names_the_group_in_errors() -> None:
    result = summarize_groups({"b": {1: 1.0, 2: 3.0}, "a": {1: 5.0}})
    assert list(result) == ["b", "a"]
    assert result["b"].mean == 2.0 and result["a"].n == 1
    with pytest.raises(ValueError, match="fc/empty"):
        summarize_groups({"fc/empty": {}})


def test_paired_difference_uses_only_shared_seeds() -> None:
    method = {1: 98.1, 2: 98.3, 3: 98.0, 4: 97.0}
    baseline = {1: 97.9, 2: 98.0, 3: 97.9, 5: 99.0}
    # differences 0.2, 0.3, 0.1 → mean 0.2, s = 0.1, half = 4.302653·0.1/√3 = 0.2484138
    d = paired_difference(method, baseline)
    assert d.seeds == (1, 2, 3)
    assert d.mean == pytest.approx(0.2)
    assert d.summary.std == pytest.approx(0.1)
    assert d.summary.half_width == pytest.approx(0.2484138, abs=1e-6)
    assert not d.excludes_zero


def test_paired_difference_is_not_the_difference_of_unpaired_intervals() -> None:
    # Large seed-to-seed spread, constant gain: pairing removes the spread.
    baseline = {1: 96.0, 2: 98.0, 3: 97.0}
    method = {s: v + 0.3 for s, v in baseline.items()}
    d = paired_difference(method, baseline)
    assert d.mean == pytest.approx(0.3)
    assert d.summary.half_width == pytest.approx(0.0, abs=1e-9)
    assert d.excludes_zero
    assert summarize(method.values()).half_width > 2.0


def test_paired_difference_with_one_shared_seed_has_no_interval() -> None:
    d = paired_difference({1: 2.0, 2: 5.0}, {2: 4.0, 3: 1.0})
    assert d.seeds == (2,) and d.mean == 1.0
    assert math.isnan(d.summary.half_width) and not d.excludes_zero


def test_paired_difference_without_shared_seeds_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"rigl \(seeds \[1, 2\]\) and static \(seeds \[3\]\)"):
        paired_difference({1: 1.0, 2: 1.0}, {3: 1.0}, method_name="rigl", baseline_name="static")


def test_format_mean_ci() -> None:
    assert format_mean_ci(summarize([97.0, 98.0, 99.0])) == "98.00 ± 2.48 (n=3)"
    assert format_mean_ci(summarize([98.2]), digits=1) == "98.2 (n=1)"
