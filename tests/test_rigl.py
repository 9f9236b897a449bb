"""RigL host logic: schedule, prune count, prune, regrow, pooling, slot re-layout (numpy only)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dynsparse import blocks, rigl
from dynsparse.methods import METHODS


def update_pattern(*args: Any, method: str, **kwargs: Any) -> rigl.PatternUpdate:
    """One layer's update by the registered method `method`."""
    return METHODS[method].update_pattern(*args, **kwargs)


def test_rigl_module_does_not_import_tensorflow() -> None:
    import subprocess

    code = "import sys, dynsparse.rigl, dynsparse.records; print('tensorflow' in sys.modules)"
    workflow = Path(__file__).resolve().parents[1] / "workflow"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=workflow
    )
    assert out.stdout.strip() == "False"


# --- schedule and prune count ---------------------------------------------------------------


def test_default_cosine_schedule_decays_from_one_to_zero() -> None:
    total = 50
    values = [rigl.cosine_schedule(t, total) for t in range(1, total + 1)]
    assert values[0] == pytest.approx(0.5 * (1 + math.cos(math.pi / total)))
    assert values[-1] == 0.0
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert rigl.cosine_schedule(25, 50) == pytest.approx(0.5)


def test_cosine_schedule_zero_steps_phase_and_period() -> None:
    assert rigl.cosine_schedule(2, 10, zero_steps=3) == 0.0
    assert rigl.cosine_schedule(3, 10, zero_steps=3) == pytest.approx(1.0)
    # t - z = 7 of T - z = 7: end of the half period
    assert rigl.cosine_schedule(10, 10, zero_steps=3) == pytest.approx(0.0, abs=1e-12)
    # a full period returns to 1 at the end; a phase delay of pi starts at 0
    assert rigl.cosine_schedule(10, 10, period=1.0) == pytest.approx(1.0)
    assert rigl.cosine_schedule(5, 10, period=1.0) == pytest.approx(0.0, abs=1e-12)
    assert rigl.cosine_schedule(0, 10, phase_delay=math.pi) == pytest.approx(0.0, abs=1e-12)


def test_prune_count_matches_the_original_examples() -> None:
    # fc1 at density 0.1: N = 25088, max 7527, k(1) = 7520 for T = 50
    n = rigl.block_count(0.1, 784, 320, 1)
    assert n == 25088
    assert rigl.prune_count(n, 0.3, 1.0) == 7527
    assert rigl.prune_count(n, 0.3, rigl.cosine_schedule(1, 50)) == 7520
    assert rigl.prune_count(n, 0.3, rigl.cosine_schedule(50, 50)) == 0
    # float products just above an integer must not round up
    assert rigl.prune_count(10, 0.3, 1.0) == 3
    assert rigl.prune_count(10, 0.3, 0.5) == 2


def test_block_counts_match_the_original_tables() -> None:
    assert rigl.block_count(0.3, 320, 10, 1) == 960
    assert rigl.block_count(0.01, 784, 320, 1) == 2509
    assert rigl.block_count(0.01, 784, 320, 16) == 10
    density = 1 - 0.9
    shapes = [(28, 96), (96, 1536), (512, 96), (96, 48), (48, 96), (96, 10)]
    assert [rigl.block_count(density, i, o, 1) for i, o in shapes] == [
        269,
        14746,
        4916,
        461,
        461,
        96,
    ]
    shapes_b8 = [(32, 96), (96, 1536), (512, 96), (96, 48), (48, 96), (96, 16)]
    assert [rigl.block_count(0.5, i, o, 8) for i, o in shapes_b8] == [24, 1152, 384, 36, 36, 12]


# --- prune -----------------------------------------------------------------------------------


def test_prune_uses_magnitude_of_negative_weights() -> None:
    rows = np.array([0, 0, 1, 1], dtype=np.int32)
    cols = np.array([0, 1, 0, 1], dtype=np.int32)
    values = np.array([-5.0, 0.1, -0.2, 3.0], dtype=np.float32).reshape(4, 1, 1)
    pruned = rigl.select_pruned(values, rows, cols, (2, 2), 2)
    np.testing.assert_array_equal(pruned, [1, 2])


def test_prune_ties_are_broken_by_position_not_list_order() -> None:
    rows = np.array([1, 0, 1, 0], dtype=np.int32)
    cols = np.array([1, 1, 0, 0], dtype=np.int32)
    values = np.array([1.0, -1.0, 1.0, 1.0], dtype=np.float32).reshape(4, 1, 1)
    # all tie: the lowest flat positions (0,0) then (0,1) go first
    pruned = rigl.select_pruned(values, rows, cols, (2, 2), 2)
    np.testing.assert_array_equal(np.sort(pruned), [1, 3])
    shuffled = np.array([2, 0, 3, 1])
    pruned_shuffled = rigl.select_pruned(
        values[shuffled], rows[shuffled], cols[shuffled], (2, 2), 2
    )
    positions = {(rows[shuffled][i], cols[shuffled][i]) for i in pruned_shuffled}
    assert positions == {(0, 0), (0, 1)}


def test_prune_blocks_by_l1_norm() -> None:
    rows = np.array([0, 0, 1], dtype=np.int32)
    cols = np.array([0, 1, 0], dtype=np.int32)
    values = np.zeros((3, 2, 2), dtype=np.float32)
    values[0] = [[1.0, -1.0], [0.0, 0.0]]  # L1 2, max 1
    values[1] = [[-1.5, 0.0], [0.0, 0.0]]  # L1 1.5, max 1.5
    values[2] = [[0.6, 0.6], [-0.6, 0.6]]  # L1 2.4
    np.testing.assert_allclose(rigl.block_l1(values), [2.0, 1.5, 2.4], rtol=1e-6)
    np.testing.assert_array_equal(rigl.select_pruned(values, rows, cols, (2, 2), 1), [1])
    np.testing.assert_array_equal(rigl.select_pruned(values, rows, cols, (2, 2), 2), [0, 1])


# --- pooling ---------------------------------------------------------------------------------


def test_block_pool_types() -> None:
    grad = np.arange(16, dtype=np.float64).reshape(4, 4)
    np.testing.assert_array_equal(blocks.pool(grad, 2, "SUM"), [[10, 18], [42, 50]])
    np.testing.assert_array_equal(blocks.pool(grad, 2, "AVG"), [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_array_equal(blocks.pool(grad, 2, "MAX"), [[5, 7], [13, 15]])
    with pytest.raises(ValueError):
        blocks.pool(grad, 3, "SUM")


def test_grid_scores_pools_an_element_gradient_with_sum_and_passes_a_pooled_one() -> None:
    grad = np.random.default_rng(0).random((8, 4))
    np.testing.assert_allclose(rigl.grid_scores(grad, (4, 2), 2), blocks.pool(grad, 2, "SUM"))
    pooled = blocks.pool(grad, 2, "MAX")
    np.testing.assert_array_equal(rigl.grid_scores(pooled, (4, 2), 2), pooled)
    np.testing.assert_array_equal(rigl.grid_scores(grad, (8, 4), 1), grad)
    with pytest.raises(ValueError):
        rigl.grid_scores(grad, (3, 3), 2)


# --- regrow ----------------------------------------------------------------------------------


def test_regrow_rigl_takes_largest_gradient_outside_the_active_set() -> None:
    scores = np.array([[9.0, 1.0, 5.0], [0.0, 7.0, 3.0]])
    active = np.array([0, 4])  # (0,0) = 9 and (1,1) = 7 are excluded
    np.testing.assert_array_equal(rigl.regrow_rigl(scores, active, 2), [1 * 0 + 2, 5])


def test_regrow_rigl_ties_go_to_the_lowest_position() -> None:
    scores = np.zeros((3, 3))
    scores[2, 2] = 1.0
    np.testing.assert_array_equal(rigl.regrow_rigl(scores, np.array([0]), 3), [1, 2, 8])


def test_regrow_random_excludes_active_and_follows_the_generator() -> None:
    active = np.arange(0, 100, 2)
    grown = rigl.regrow_random(100, active, 30, np.random.default_rng(3))
    assert len(np.unique(grown)) == 30
    assert not np.intersect1d(grown, active).size
    again = rigl.regrow_random(100, active, 30, np.random.default_rng(3))
    np.testing.assert_array_equal(grown, again)
    with pytest.raises(ValueError):
        rigl.regrow_random(100, active, 51, np.random.default_rng(3))


def _layer(
    grid: tuple[int, int], n: int, bs: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows, cols = blocks.random_pattern(grid, n, rng)
    values = rng.normal(size=(n, bs, bs)).astype(np.float32)
    return rows, cols, values


@pytest.mark.parametrize("pooling", ["NONE", "SUM", "AVG", "MAX"])
@pytest.mark.parametrize("block_size", [1, 4])
def test_update_pattern_rigl_for_each_pooling(pooling: str, block_size: int) -> None:
    grid = (6, 5)
    rows, cols, values = _layer(grid, 9, block_size, seed=1)
    element_grad = np.random.default_rng(2).random((grid[0] * block_size, grid[1] * block_size))
    if pooling == "NONE" or block_size == 1:
        grad = element_grad
        expected_scores = rigl.grid_scores(element_grad, grid, block_size)
    else:
        grad = blocks.pool(element_grad, block_size, pooling)
        expected_scores = grad
    k = 4
    update = update_pattern(
        rows,
        cols,
        values,
        grid_shape=grid,
        block_size=block_size,
        k=k,
        method="rigl",
        dense_grad=grad,
    )
    old_flat = set(rigl.flat_positions(rows, cols, grid).tolist())
    new_flat = rigl.flat_positions(update.rows, update.cols, grid)
    assert len(new_flat) == len(rows) and len(set(new_flat.tolist())) == len(rows)
    assert np.all(np.diff(new_flat) > 0), "the new pattern is sorted row-major"
    grown = [f for f, s in zip(new_flat.tolist(), update.source.tolist(), strict=True) if s < 0]
    assert len(grown) == k and not old_flat & set(grown)
    inactive = np.array(sorted(set(range(grid[0] * grid[1])) - old_flat))
    best = inactive[np.lexsort((inactive, -expected_scores.ravel()[inactive]))[:k]]
    assert set(grown) == set(best.tolist())
    pruned = set(range(len(rows))) - set(update.source[update.source >= 0].tolist())
    assert pruned == set(rigl.select_pruned(values, rows, cols, grid, k).tolist())


def test_update_pattern_random_is_deterministic_and_advances_the_generator() -> None:
    grid = (10, 10)
    rows, cols, values = _layer(grid, 30, 1, seed=4)
    kwargs = dict(grid_shape=grid, block_size=1, k=8, method="random")
    rng = np.random.default_rng(7)
    first = update_pattern(rows, cols, values, rng=rng, **kwargs)
    second = update_pattern(rows, cols, values, rng=rng, **kwargs)
    replay = update_pattern(rows, cols, values, rng=np.random.default_rng(7), **kwargs)
    np.testing.assert_array_equal(first.rows, replay.rows)
    np.testing.assert_array_equal(first.cols, replay.cols)
    assert not np.array_equal(
        rigl.flat_positions(first.rows, first.cols, grid),
        rigl.flat_positions(second.rows, second.cols, grid),
    )
    old_flat = set(rigl.flat_positions(rows, cols, grid).tolist())
    new_flat = rigl.flat_positions(first.rows, first.cols, grid)
    grown = set(new_flat[first.source < 0].tolist())
    assert len(grown) == 8 and not grown & old_flat


def test_static_and_zero_k_keep_the_pattern() -> None:
    grid = (4, 4)
    rows, cols, values = _layer(grid, 5, 1, seed=5)
    for method, k in (("static", 3), ("rigl", 0), ("random", 0)):
        update = update_pattern(
            rows, cols, values, grid_shape=grid, block_size=1, k=k, method=method
        )
        assert not update.changed
        np.testing.assert_array_equal(update.rows, rows)
        np.testing.assert_array_equal(update.gather(values), values)


def test_k_is_capped_by_the_free_positions() -> None:
    grid = (2, 2)
    rows, cols, values = _layer(grid, 3, 1, seed=6)
    update = update_pattern(
        rows,
        cols,
        values,
        grid_shape=grid,
        block_size=1,
        k=3,
        method="rigl",
        dense_grad=np.ones((2, 2)),
    )
    assert update.n_pruned == 1 and len(update.rows) == 3


# --- slot re-layout --------------------------------------------------------------------------


def test_gather_keeps_kept_values_and_slots_and_zeroes_new_blocks() -> None:
    grid = (8, 8)
    bs = 2
    rows, cols, values = _layer(grid, 12, bs, seed=8)
    adam_m = values * 0.5 + 1.0
    adam_v = np.abs(values) + 2.0
    grad = np.random.default_rng(9).random((16, 16))
    update = update_pattern(
        rows, cols, values, grid_shape=grid, block_size=bs, k=5, method="rigl", dense_grad=grad
    )
    old_positions = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(rows, cols, strict=True))}
    for array in (values, adam_m, adam_v):
        new = update.gather(array)
        assert new.shape == array.shape and new.dtype == array.dtype
        for i, (r, c) in enumerate(zip(update.rows, update.cols, strict=True)):
            source = update.source[i]
            if source < 0:
                assert (int(r), int(c)) not in old_positions
                assert not new[i].any()
            else:
                assert old_positions[(int(r), int(c))] == source
                np.testing.assert_array_equal(new[i], array[source])


# --- initialisation --------------------------------------------------------------------------


def test_initial_pattern_is_unique_sorted_and_seeded() -> None:
    rows, cols = blocks.random_pattern((49, 20), 100, np.random.default_rng(1))
    flat = rigl.flat_positions(rows, cols, (49, 20))
    assert len(np.unique(flat)) == 100 and np.all(np.diff(flat) > 0)
    assert rows.dtype == np.int32 and rows.max() < 49 and cols.max() < 20
    rows2, _ = blocks.random_pattern((49, 20), 100, np.random.default_rng(1))
    np.testing.assert_array_equal(rows, rows2)


def test_init_limit() -> None:
    assert rigl.init_limit(784, 320, 0.1) == pytest.approx(0.233, abs=1e-3)
    assert rigl.init_limit(320, 10, 0.3) == pytest.approx(0.246, abs=1e-3)


def test_top_k_matches_a_full_sort_with_position_ties() -> None:
    rng = np.random.default_rng(11)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        scores = rng.integers(0, 4, size=n).astype(np.float64)  # many ties
        positions = rng.permutation(1000)[:n]
        k = int(rng.integers(0, n + 1))
        expected = np.sort(np.lexsort((positions, -scores))[:k])
        np.testing.assert_array_equal(rigl.top_k(scores, positions, k), expected)
