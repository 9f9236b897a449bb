"""Summaries over replicate seeds, in plain Python and numpy (no scipy).

`summarize` gives n, mean, sample standard deviation (ddof = 1), a 95 % Student-t confidence
interval of the mean, min and max of one group of values. `paired_difference` compares a method
with a baseline seed by seed: the mean of (method − baseline) over the seeds both have, and its
95 % t interval.

With n = 1 there is no spread to estimate: `std`, `ci_low`, `ci_high` and `half_width` are NaN
(not 0, which would claim certainty); `format_mean_ci` then prints the mean and n only.

The t quantile is computed here, not taken from scipy: for an integer number of degrees of freedom
the two-sided probability P(|T| < t) has a closed form (Abramowitz & Stegun 26.7.3–26.7.4), and
the quantile is found by bisection on it. Seeds counts are integers, so integer df is all we need.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95

# Bisection on [0, upper] to this width in t; the table values we check have 3 decimals.
_QUANTILE_TOLERANCE = 1e-12


def t_two_sided_probability(t: float, df: int) -> float:
    """P(|T| < t) for Student's T with `df` (a positive integer) degrees of freedom, t ≥ 0.

    A&S 26.7.3/26.7.4 with θ = atan(t/√df): odd df gives (2/π)(θ + sinθ·cosθ·S_odd), even df
    gives sinθ·S_even, where S are finite series in cos²θ.
    """
    _check_df(df)
    if t < 0:
        raise ValueError(f"t must be non-negative, got {t}")
    if math.isinf(t):
        return 1.0
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2 == 1:
        if df == 1:
            return 2.0 * theta / math.pi
        term, series = 1.0, 1.0
        for k in range(1, (df - 3) // 2 + 1):
            term *= cos2 * (2 * k) / (2 * k + 1)
            series += term
        return (2.0 / math.pi) * (theta + math.sin(theta) * math.cos(theta) * series)
    term, series = 1.0, 1.0
    for k in range(1, (df - 2) // 2 + 1):
        term *= cos2 * (2 * k - 1) / (2 * k)
        series += term
    return math.sin(theta) * series


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's T with `df` degrees of freedom, for 0.5 ≤ p < 1.

    t_quantile(0.975, df) is the half-width multiplier of a two-sided 95 % interval.
    """
    _check_df(df)
    if not 0.5 <= p < 1.0:
        raise ValueError(f"p must be in [0.5, 1), got {p}")
    target = 2.0 * p - 1.0  # P(|T| < t) that puts p below t
    low, high = 0.0, 1.0
    while t_two_sided_probability(high, df) < target:
        high *= 2.0
    while high - low > _QUANTILE_TOLERANCE * max(1.0, high):
        middle = 0.5 * (low + high)
        if t_two_sided_probability(middle, df) < target:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def _check_df(df: int) -> None:
    if isinstance(df, bool) or not isinstance(df, int | np.integer) or df < 1:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df!r}")


@dataclass(frozen=True)
class Summary:
    """One group's values over seeds. The CI is mean ± half_width; NaN where n = 1."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    min: float
    max: float

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "mean": self.mean,
            "std": self.std,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "min": self.min,
            "max": self.max,
        }


def _finite_array(values: Iterable[float], what: str) -> np.ndarray:
    array = np.asarray(list(values), dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{what}: expected a flat list of numbers, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{what}: no values to summarize")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: values must be finite, got {array.tolist()}")
    return array


def summarize(values: Iterable[float], *, what: str = "values") -> Summary:
    """n, mean, sample std (ddof=1), 95 % t CI of the mean, min, max of `values`.

    `what` names the group in error messages (e.g. "fc/rigl_0.1_0.3 test_accuracy").
    """
    array = _finite_array(values, what)
    n = int(array.size)
    mean = float(array.mean())
    if n == 1:
        std = low = high = math.nan
    else:
        std = float(array.std(ddof=1))
        half = t_quantile(0.5 + CONFIDENCE / 2.0, n - 1) * std / math.sqrt(n)
        low, high = mean - half, mean + half
    return Summary(
        n=n,
        mean=mean,
        std=std,
        ci_low=low,
        ci_high=high,
        min=float(array.min()),
        max=float(array.max()),
    )


def format_mean_ci(summary: Summary, digits: int = 2) -> str:
    """ "98.12 ± 0.15 (n=3)" for a table cell; "98.12 (n=1)" when there is no interval."""
    if math.isnan(summary.half_width):
        return f"{summary.mean:.{digits}f} (n={summary.n})"
    return f"{summary.mean:.{digits}f} ± {summary.half_width:.{digits}f} (n={summary.n})"


def summarize_groups(groups: Mapping[str, Mapping[int, float]]) -> dict[str, Summary]:
    """`summarize` for each group of {seed: value}, keyed like `groups` (order kept)."""
    return {name: summarize(by_seed.values(), what=name) for name, by_seed in groups.items()}


@dataclass(frozen=True)
class PairedDifference:
    """method − baseline over the shared seeds (sorted); `summary` is that of the differences."""

    seeds: tuple[int, ...]
    summary: Summary

    @property
    def mean(self) -> float:
        return self.summary.mean

    @property
    def excludes_zero(self) -> bool:
        """True when the 95 % CI lies entirely above or below 0 (never for n = 1)."""
        low, high = self.summary.ci_low, self.summary.ci_high
        return bool(low > 0.0 or high < 0.0)


def paired_difference(
    method: Mapping[int, float],
    baseline: Mapping[int, float],
    *,
    method_name: str = "method",
    baseline_name: str = "baseline",
) -> PairedDifference:
    """Mean and 95 % t CI of method[seed] − baseline[seed] over the seeds both have.

    Seeds only one side has are ignored (a seed still running, or removed from one sample); no
    shared seed at all is an error.
    """
    shared = tuple(sorted(set(method) & set(baseline)))
    if not shared:
        raise ValueError(
            f"{method_name} (seeds {sorted(method)}) and {baseline_name} "
            f"(seeds {sorted(baseline)}) share no seed, so they cannot be paired; "
            f"give both samples the same seeds"
        )
    differences = [float(method[s]) - float(baseline[s]) for s in shared]
    summary = summarize(differences, what=f"{method_name} - {baseline_name}")
    return PairedDifference(seeds=shared, summary=summary)
