"""A fixed validation split of the training images, the same for every sample and seed.

The split depends only on (n_train, n_validation, split_seed[, labels]), never on a sample's
training seed. Every training image gets a 64-bit key, the first `n_train` raw outputs of
`numpy.random.PCG64(split_seed)`; the validation set is the `n_validation` images with the
smallest keys (ties, which have probability ~n²/2⁶⁴, go to the lower index). Raw bit-generator
streams are covered by NumPy's compatibility policy (NEP 19: a BitGenerator with a given seed
produces the same stream on every platform and version), unlike `Generator.permutation`, whose
algorithm may change, so the split is stable across machines and NumPy upgrades.

Stratified (when `labels` are given): class c gets ⌊n_validation·n_c/n⌋ images, the remaining
few go to the classes with the largest fractional parts (ties to the lower label), and within a
class the smallest keys are taken. Stratifying keeps the validation class mix equal to the
training mix, which removes one source of noise from a 5 000-image estimate; MNIST's classes are
close to balanced, so the two variants differ little.

Indices are returned sorted ascending (int64), so the training stage reads a stable subset; the
per-epoch shuffle of the training set is the sample seed's business.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dynsparse.settings import DEFAULT_VALIDATION

N_TRAIN_IMAGES = 60_000
# Fixed once; changing it changes every validation set and so every selection made on it.
DEFAULT_SPLIT_SEED = 20_260_101


class SplitError(ValueError):
    """A validation size or label array that cannot give a split; the message says the fix."""


@dataclass(frozen=True)
class Split:
    """Sorted, disjoint indices into the training images; together they cover all of them."""

    train: np.ndarray
    validation: np.ndarray

    @property
    def n_validation(self) -> int:
        return int(self.validation.size)


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def split_keys(n_train: int, split_seed: int) -> np.ndarray:
    """One PCG64 raw 64-bit output per image: the order in which images join validation."""
    return np.random.PCG64(split_seed).random_raw(n_train)


def _check(n_train: int, n_validation: int, split_seed: int) -> None:
    if not _is_int(n_train) or n_train <= 0:
        raise SplitError(f"the number of training images must be a positive integer: {n_train!r}")
    if not _is_int(n_validation) or n_validation < 0:
        raise SplitError(
            f"validation must be a non-negative integer (0 = no validation set), got "
            f"{n_validation!r}"
        )
    if n_validation >= n_train:
        raise SplitError(
            f"validation {n_validation} leaves no training images of {n_train}; use at most "
            f"{n_train - 1} (the default is {DEFAULT_VALIDATION})"
        )
    if not _is_int(split_seed) or split_seed < 0:
        raise SplitError(f"split_seed must be a non-negative integer, got {split_seed!r}")


def _smallest_keys(keys: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    order = np.argsort(keys[candidates], kind="stable")
    return candidates[order[:k]]


def stratified_quota(class_counts: np.ndarray, n_validation: int) -> np.ndarray:
    """Validation images per class: largest-remainder rounding of n_validation·n_c/n."""
    counts = np.asarray(class_counts, dtype=np.int64)
    exact = n_validation * counts / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    left = n_validation - int(quota.sum())
    by_remainder = np.argsort(-(exact - quota), kind="stable")
    quota[by_remainder[:left]] += 1
    return quota


def validation_split(
    n_train: int = N_TRAIN_IMAGES,
    n_validation: int = DEFAULT_VALIDATION,
    *,
    split_seed: int = DEFAULT_SPLIT_SEED,
    labels: np.ndarray | None = None,
) -> Split:
    """(train, validation) indices of `n_train` images; `n_validation = 0` gives no validation."""
    _check(n_train, n_validation, split_seed)
    keys = split_keys(n_train, split_seed)
    everything = np.arange(n_train, dtype=np.int64)
    if labels is None:
        validation = _smallest_keys(keys, everything, n_validation)
    else:
        labels = np.asarray(labels)
        if labels.shape != (n_train,):
            raise SplitError(
                f"labels have shape {labels.shape}, expected ({n_train},): one per training image"
            )
        classes, class_of = np.unique(labels, return_inverse=True)
        quota = stratified_quota(np.bincount(class_of, minlength=len(classes)), n_validation)
        validation = np.concatenate(
            [
                _smallest_keys(keys, np.flatnonzero(class_of == c), int(quota[c]))
                for c in range(len(classes))
            ]
        ).astype(np.int64)
    validation = np.sort(validation)
    in_validation = np.zeros(n_train, dtype=bool)
    in_validation[validation] = True
    return Split(train=everything[~in_validation], validation=validation)
