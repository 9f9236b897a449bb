"""The method registry's candidate rules, SET, update_end and grow_batches (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest
from dynsparse import rigl
from dynsparse.blocks import random_pattern
from dynsparse.methods import METHODS, method_of
from dynsparse.schedules import drop_mask, regrow_mask
from dynsparse.train import accumulate, check_grow_batches, frozen_after


def _masks(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


@pytest.mark.parametrize("trial", range(30))
def test_published_rule_matches_rigl_reference_masks(trial: int) -> None:
    """regrow_dropped=True gives google-research/rigl's mask (schedules.regrow_mask)."""
    rng = np.random.default_rng(100 + trial)
    shape = (int(rng.integers(4, 30)), int(rng.integers(4, 30)))
    nnz = int(rng.integers(2, shape[0] * shape[1] - 1))
    rows, cols = random_pattern(shape, nnz, rng)
    values = rng.normal(size=nnz).astype(np.float32)
    grad = np.abs(rng.normal(size=shape))
    if trial % 2:
        values, grad = np.round(values, 1), np.round(grad, 1)
    k = int(rng.integers(0, nnz + 1))
    update = method_of("rigl").update_pattern(
        rows,
        cols,
        values.reshape(-1, 1, 1),
        grid_shape=shape,
        block_size=1,
        k=k,
        dense_grad=grad,
        regrow_dropped=True,
    )
    old = _masks(rows, cols, shape)
    weights = np.zeros(shape)
    weights[rows, cols] = values
    kept = drop_mask(old, weights, k)
    expected = regrow_mask(old, kept, grad, k, regrow_dropped=True)
    np.testing.assert_array_equal(_masks(update.rows, update.cols, shape), expected)


def _dropped_block_has_top_gradient() -> tuple[np.ndarray, ...]:
    """A 1x4 layer: blocks at 0 (weight 0.1) and 1 (weight 5); the gradient is largest at 0."""
    rows = np.array([0, 0], dtype=np.int32)
    cols = np.array([0, 1], dtype=np.int32)
    values = np.array([0.1, 5.0], dtype=np.float32).reshape(-1, 1, 1)
    grad = np.array([[9.0, 0.0, 1.0, 2.0]])
    return rows, cols, values, grad


def test_published_rigl_regrows_a_just_dropped_block_with_its_weight_and_state() -> None:
    rows, cols, values, grad = _dropped_block_has_top_gradient()
    update = METHODS["rigl"].update_pattern(
        rows, cols, values, grid_shape=(1, 4), block_size=1, k=1, dense_grad=grad,
        regrow_dropped=True,
    )  # fmt: skip
    np.testing.assert_array_equal(update.cols, [0, 1])
    np.testing.assert_array_equal(update.source, [0, 1])  # block 0 came back: not new
    assert not update.changed
    adam_m = np.array([0.7, 0.3], dtype=np.float32).reshape(-1, 1, 1)
    np.testing.assert_array_equal(update.gather(values), values)
    np.testing.assert_array_equal(update.gather(adam_m), adam_m)


def test_graphcore_rule_never_regrows_a_just_dropped_block() -> None:
    rows, cols, values, grad = _dropped_block_has_top_gradient()
    update = METHODS["rigl"].update_pattern(
        rows, cols, values, grid_shape=(1, 4), block_size=1, k=1, dense_grad=grad,
        regrow_dropped=False,
    )  # fmt: skip
    np.testing.assert_array_equal(update.cols, [1, 3])  # 3 has the best gradient outside
    np.testing.assert_array_equal(update.source, [1, -1])
    np.testing.assert_array_equal(update.gather(values).ravel(), [5.0, 0.0])


def test_published_rule_mixes_regrown_and_new_blocks() -> None:
    rows = np.array([0, 0, 0], dtype=np.int32)
    cols = np.array([0, 1, 2], dtype=np.int32)
    values = np.array([0.1, 0.2, 5.0], dtype=np.float32).reshape(-1, 1, 1)
    grad = np.array([[9.0, 0.0, 0.0, 4.0, 1.0]])  # dropped: 0 and 1; best: 0, then 3
    update = METHODS["rigl"].update_pattern(
        rows, cols, values, grid_shape=(1, 5), block_size=1, k=2, dense_grad=grad,
        regrow_dropped=True,
    )  # fmt: skip
    np.testing.assert_array_equal(update.cols, [0, 2, 3])
    np.testing.assert_array_equal(update.source, [0, 2, -1])
    assert update.n_pruned == 1
    expected = np.array([values.ravel()[0], values.ravel()[2], 0.0], dtype=np.float32)
    np.testing.assert_array_equal(update.gather(values).ravel(), expected)


def test_published_rule_is_not_capped_by_the_free_positions() -> None:
    rows, cols = np.array([0, 0, 0], dtype=np.int32), np.array([0, 1, 2], dtype=np.int32)
    values = np.array([1.0, 2.0, 3.0], dtype=np.float32).reshape(-1, 1, 1)
    grad = np.array([[5.0, 4.0, 0.0, 3.0]])
    update = METHODS["rigl"].update_pattern(
        rows, cols, values, grid_shape=(1, 4), block_size=1, k=3, dense_grad=grad,
        regrow_dropped=True,
    )  # fmt: skip
    np.testing.assert_array_equal(update.cols, [0, 1, 3])  # the top 3 of every position
    graphcore = METHODS["rigl"].update_pattern(
        rows, cols, values, grid_shape=(1, 4), block_size=1, k=3, dense_grad=grad,
        regrow_dropped=False,
    )  # fmt: skip
    assert graphcore.n_pruned == 1  # only one free position


def test_set_regrows_dropped_whatever_the_setting_and_random_follows_it() -> None:
    """SET and random (published rule) draw from the same candidates with the same generator."""
    shape = (6, 6)
    rows, cols = random_pattern(shape, 30, np.random.default_rng(1))
    values = np.random.default_rng(2).normal(size=(30, 1, 1)).astype(np.float32)
    kwargs = dict(grid_shape=shape, block_size=1, k=6)
    results = {}
    for name, flag in (("set", False), ("set", True), ("random", True), ("random", False)):
        update = METHODS[name].update_pattern(
            rows, cols, values, rng=np.random.default_rng(3), regrow_dropped=flag, **kwargs
        )
        results[name, flag] = rigl.flat_positions(update.rows, update.cols, shape)
    np.testing.assert_array_equal(results["set", False], results["set", True])
    np.testing.assert_array_equal(results["set", True], results["random", True])
    old = set(rigl.flat_positions(rows, cols, shape).tolist())
    graphcore_new = set(results["random", False].tolist()) - old
    assert len(graphcore_new) == 6  # only 6 free positions: all of them, none of the dropped


def test_set_draws_only_outside_the_kept_blocks_and_may_regrow_dropped() -> None:
    shape = (10, 10)
    rows, cols = random_pattern(shape, 60, np.random.default_rng(4))
    values = np.random.default_rng(5).normal(size=(60, 1, 1)).astype(np.float32)
    regrown_dropped = 0
    rng = np.random.default_rng(6)
    for _ in range(20):
        update = METHODS["set"].update_pattern(
            rows, cols, values, grid_shape=shape, block_size=1, k=20, rng=rng
        )
        kept = set(update.source[update.source >= 0].tolist())
        pruned = set(rigl.select_pruned(values, rows, cols, shape, 20).tolist())
        regrown_dropped += len(kept & pruned)
        assert len(update.rows) == 60
    assert regrown_dropped > 0  # 20 of 60 candidates are just-dropped: some come back


def test_frozen_after_counts_the_updates_that_change_the_pattern() -> None:
    assert frozen_after(200, 1.0) == 200
    assert frozen_after(200, 0.75) == 150
    assert frozen_after(10, 0.01) == 1
    with pytest.raises(ValueError, match="update_end"):
        frozen_after(10, 0.0)


def test_check_grow_batches_against_the_update_gaps() -> None:
    check_grow_batches([9, 19, 29], 10)
    with pytest.raises(ValueError, match="grow_batches 11"):
        check_grow_batches([9, 19, 29], 11)
    with pytest.raises(ValueError, match="grow_batches 0"):
        check_grow_batches([9], 0)


def test_accumulate_sums_in_float64() -> None:
    a = [np.full((2, 2), 1e8, dtype=np.float32)]
    b = [np.ones((2, 2), dtype=np.float32)]
    total = accumulate(a, b)
    assert total[0].dtype == np.float64
    np.testing.assert_array_equal(total[0], np.full((2, 2), 1e8 + 1))
