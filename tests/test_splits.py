"""dynsparse.splits: disjoint, covering, stable, stratified validation splits."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from dynsparse.splits import (
    DEFAULT_SPLIT_SEED,
    Split,
    SplitError,
    split_keys,
    stratified_quota,
    validation_split,
)


def digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()


def assert_partition(split: Split, n_train: int, n_validation: int) -> None:
    assert split.validation.size == n_validation
    assert split.train.size == n_train - n_validation
    assert np.intersect1d(split.train, split.validation).size == 0
    together = np.sort(np.concatenate([split.train, split.validation]))
    np.testing.assert_array_equal(together, np.arange(n_train))
    for part in (split.train, split.validation):
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)


def test_default_split_is_a_disjoint_cover_of_60000() -> None:
    split = validation_split()
    assert_partition(split, 60_000, 5_000)


# Stability is the point of these: the validation set must never change silently (a NumPy
# upgrade, another machine). The PCG64 raw stream is fixed by NumPy's NEP 19 policy.
def test_pcg64_raw_stream_is_the_documented_one() -> None:
    assert split_keys(3, DEFAULT_SPLIT_SEED).tolist() == [
        4285179866339403946,
        15275854281187292848,
        9739315471840732266,
    ]


def test_default_split_is_stable() -> None:
    split = validation_split()
    assert split.validation[:10].tolist() == [38, 54, 67, 75, 95, 111, 137, 146, 156, 205]
    assert digest(split.validation) == (
        "ec10a2d12fb6f79da4e2a805d42efedb1e85283dbc639c9e84961facb7db53f6"
    )


def test_stratified_split_is_stable() -> None:
    split = validation_split(labels=np.arange(60_000) % 10)
    assert split.validation[:10].tolist() == [38, 54, 67, 75, 95, 137, 146, 156, 205, 213]
    assert digest(split.validation) == (
        "803bf056af64d7a6ef171019b37aa2e4e5d78944b7671ff281b183688bbae44d"
    )


def test_repeated_calls_agree_and_seeds_differ() -> None:
    first = validation_split(1000, 100, split_seed=7)
    again = validation_split(1000, 100, split_seed=7)
    other = validation_split(1000, 100, split_seed=8)
    np.testing.assert_array_equal(first.validation, again.validation)
    assert not np.array_equal(first.validation, other.validation)


def test_a_larger_validation_set_contains_the_smaller_one() -> None:
    small = validation_split(60_000, 1_000)
    large = validation_split(60_000, 5_000)
    assert np.isin(small.validation, large.validation).all()


def test_validation_zero_trains_on_everything() -> None:
    split = validation_split(60_000, 0)
    assert_partition(split, 60_000, 0)
    np.testing.assert_array_equal(split.train, np.arange(60_000))


def test_split_is_spread_over_the_whole_range() -> None:
    # A uniform draw: each tenth of the training set holds about a tenth of validation.
    per_tenth = np.bincount(validation_split().validation // 6_000, minlength=10)
    assert per_tenth.min() > 420 and per_tenth.max() < 580


def test_stratified_split_keeps_the_class_mix() -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(10, size=60_000, p=np.linspace(0.05, 0.15, 10))
    split = validation_split(60_000, 5_000, labels=labels)
    assert_partition(split, 60_000, 5_000)
    counts = np.bincount(labels, minlength=10)
    expected = 5_000 * counts / counts.sum()
    got = np.bincount(labels[split.validation], minlength=10)
    assert np.all(np.abs(got - expected) < 1.0)


def test_stratified_quota_uses_largest_remainders() -> None:
    # 10·[5, 3, 2]/10 = [5, 3, 2]; 4·[5, 3, 2]/10 = [2.0, 1.2, 0.8] → [2, 1, 1].
    assert stratified_quota(np.array([5, 3, 2]), 10).tolist() == [5, 3, 2]
    assert stratified_quota(np.array([5, 3, 2]), 4).tolist() == [2, 1, 1]
    # Equal remainders go to the lower label: 3 · [1, 1, 1, 1]/4 = 0.75 each.
    assert stratified_quota(np.array([1, 1, 1, 1]), 3).tolist() == [1, 1, 1, 0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_validation": 60_000}, "leaves no training images"),
        ({"n_validation": 70_000}, "leaves no training images"),
        ({"n_validation": -1}, "non-negative integer"),
        ({"n_validation": 0.5}, "non-negative integer"),
        ({"n_validation": True}, "non-negative integer"),
        ({"n_train": 0}, "positive integer"),
        ({"split_seed": -3}, "split_seed"),
        ({"labels": np.zeros(10)}, r"labels have shape \(10,\)"),
    ],
)
def test_bad_sizes_are_clear_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(SplitError, match=match):
        validation_split(**kwargs)  # type: ignore[arg-type]
