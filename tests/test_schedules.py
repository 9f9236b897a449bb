"""dynsparse.schedules: GMP's cubic schedule, the SNFS average, SNIP, drop and regrow rules."""

from __future__ import annotations

import numpy as np
import pytest
from dynsparse.schedules import (
    GmpSchedule,
    ScheduleError,
    drop_mask,
    ema_update,
    gmp_density,
    keep_count,
    new_connections,
    regrow_mask,
    snip_global_masks,
    snip_scores,
    top_k_mask,
)

# ----------------------------------------------------------------------------- GMP


def test_gmp_cubic_values_by_hand() -> None:
    # start 100, end 500, every 100: progress 0, ¼, ½, ¾, 1 → (1 − p)³ = 1, 27/64, 1/8, 1/64, 0
    # d = 0.1 + 0.9·(1 − p)³
    schedule = GmpSchedule(start_step=100, end_step=500, frequency=100, final_density=0.1)
    expected = {100: 1.0, 200: 0.1 + 0.9 * 27 / 64, 300: 0.1 + 0.9 / 8, 400: 0.1 + 0.9 / 64,
                500: 0.1}  # fmt: skip
    for step, density in expected.items():
        assert schedule.density(step) == pytest.approx(density)
    assert schedule.pruning_steps == [100, 200, 300, 400, 500]


def test_gmp_holds_between_pruning_steps_and_outside_the_span() -> None:
    schedule = GmpSchedule(start_step=100, end_step=500, frequency=100, final_density=0.1)
    assert schedule.density(0) == 1.0 and schedule.density(99) == 1.0
    assert schedule.density(299) == schedule.density(200)
    assert schedule.density(10_000) == 0.1
    assert schedule.is_pruning_step(300) and not schedule.is_pruning_step(301)
    assert not schedule.is_pruning_step(600)


def test_gmp_is_monotone_and_starts_from_a_given_density() -> None:
    schedule = GmpSchedule(0, 1000, 10, final_density=0.05, initial_density=0.5)
    densities = [schedule.density(t) for t in range(0, 1001)]
    assert densities[0] == 0.5 and densities[-1] == 0.05
    assert all(a >= b for a, b in zip(densities, densities[1:], strict=False))
    assert gmp_density(500, start_step=0, end_step=1000, frequency=10, final_density=0.05,
                       initial_density=0.5) == pytest.approx(0.05 + 0.45 / 8)  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"end_step": 450}, "not a multiple of frequency 100.*use end_step 400 or 500"),
        ({"end_step": 100}, "must come after start_step"),
        ({"end_step": 50}, "must come after start_step"),
        ({"start_step": -1}, "start_step -1 must be ≥ 0"),
        ({"frequency": 0}, "frequency 0 must be ≥ 1"),
        ({"frequency": 2.5}, "frequency must be an integer"),
        ({"final_density": 0.0}, r"final density 0.0 must be in \(0, 1\]"),
        ({"initial_density": 0.05}, "must lie between the final density 0.1 and 1"),
        ({"initial_density": 1.5}, "must lie between"),
    ],
)
def test_gmp_rejects_inconsistent_settings(kwargs: dict[str, object], match: str) -> None:
    settings: dict[str, object] = {"start_step": 100, "end_step": 500, "frequency": 100,
                                   "final_density": 0.1, **kwargs}  # fmt: skip
    with pytest.raises(ScheduleError, match=match):
        GmpSchedule(**settings)  # type: ignore[arg-type]


def test_gmp_must_end_within_training() -> None:
    schedule = GmpSchedule(100, 500, 100, final_density=0.1)
    schedule.check_fits(500)
    with pytest.raises(ScheduleError, match="end_step 500 lies beyond the 400 training steps"):
        schedule.check_fits(400)


def test_keep_count_rounds_like_rigl() -> None:
    assert keep_count(1000, 0.3) == 300
    assert keep_count(235200, 0.1) == 23520
    assert keep_count(7, 0.5) == 4


# ----------------------------------------------------------------------------- SNFS


def test_ema_update_by_hand() -> None:
    average = np.zeros(3)
    average = ema_update(average, np.array([1.0, -2.0, 0.0]))
    np.testing.assert_allclose(average, [0.1, -0.2, 0.0])
    average = ema_update(average, np.array([1.0, 2.0, 10.0]))
    # 0.9·[0.1, −0.2, 0] + 0.1·[1, 2, 10]
    np.testing.assert_allclose(average, [0.19, 0.02, 1.0])


def test_ema_of_a_constant_gradient_converges_to_it() -> None:
    average = np.zeros(2)
    for _ in range(300):
        average = ema_update(average, np.array([3.0, -1.0]), momentum=0.9)
    np.testing.assert_allclose(average, [3.0, -1.0], rtol=1e-9)


def test_ema_rejects_bad_momentum_and_shapes() -> None:
    with pytest.raises(ValueError, match="momentum"):
        ema_update(np.zeros(2), np.zeros(2), momentum=1.0)
    with pytest.raises(ValueError, match="differs"):
        ema_update(np.zeros(2), np.zeros(3))


# ----------------------------------------------------------------------------- SNIP


def test_snip_keeps_the_largest_weight_times_gradient() -> None:
    weights = np.array([[1.0, -2.0], [0.5, 3.0]])
    grads = np.array([[-4.0, 1.0], [10.0, 0.0]])
    scores = snip_scores(weights, grads)  # |w·g| = [[4, 2], [5, 0]]
    np.testing.assert_array_equal(scores, [[4.0, 2.0], [5.0, 0.0]])
    np.testing.assert_array_equal(top_k_mask(scores, 2), [[True, False], [True, False]])


def test_top_k_mask_ties_go_to_the_lowest_position_and_nan_ranks_last() -> None:
    scores = np.array([1.0, 2.0, 2.0, np.nan, 2.0])
    np.testing.assert_array_equal(top_k_mask(scores, 2), [False, True, True, False, False])
    np.testing.assert_array_equal(top_k_mask(scores, 4), [True, True, True, False, True])
    assert not top_k_mask(scores, 0).any()
    with pytest.raises(ValueError, match="cannot select 6 of 5"):
        top_k_mask(scores, 6)


def test_snip_global_masks_let_layers_compete() -> None:
    scores = {"a": np.array([[9.0, 1.0]]), "b": np.array([8.0, 7.0, 6.0, 1.0])}
    masks = snip_global_masks(scores, 0.5)  # keep 3 of 6: 9, 8, 7
    np.testing.assert_array_equal(masks["a"], [[True, False]])
    np.testing.assert_array_equal(masks["b"], [True, True, False, False])
    with pytest.raises(ValueError, match="density"):
        snip_global_masks(scores, 0.0)


def test_snip_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="differs"):
        snip_scores(np.zeros((2, 2)), np.zeros(4))


# ----------------------------------------------------------------------------- drop and regrow

OLD = np.array([True, True, True, False, False, False])
WEIGHTS = np.array([0.5, -0.1, 2.0, 0.0, 0.0, 0.0])


def test_drop_removes_the_smallest_magnitudes() -> None:
    np.testing.assert_array_equal(drop_mask(OLD, WEIGHTS, 1), [True, False, True, False, False,
                                                               False])  # fmt: skip
    np.testing.assert_array_equal(drop_mask(OLD, WEIGHTS, 0), OLD)
    # Ties by position: the first of two equal magnitudes goes.
    np.testing.assert_array_equal(drop_mask(np.ones(3, bool), np.array([1.0, -1.0, 2.0]), 1),
                                  [False, True, True])  # fmt: skip
    with pytest.raises(ValueError, match="cannot drop 4 of 3"):
        drop_mask(OLD, WEIGHTS, 4)


def test_published_rule_may_regrow_a_just_dropped_connection() -> None:
    kept = drop_mask(OLD, WEIGHTS, 1)  # drops position 1
    scores = np.array([0.0, 9.0, 0.0, 1.0, 3.0, 2.0])  # the dropped one scores highest
    new = regrow_mask(OLD, kept, scores, 1, regrow_dropped=True)
    np.testing.assert_array_equal(new, OLD)  # position 1 comes straight back
    assert not new_connections(OLD, new).any()  # so it keeps its weight and state


def test_graphcore_rule_excludes_the_whole_old_pattern() -> None:
    kept = drop_mask(OLD, WEIGHTS, 1)
    scores = np.array([0.0, 9.0, 0.0, 1.0, 3.0, 2.0])
    new = regrow_mask(OLD, kept, scores, 1, regrow_dropped=False)
    np.testing.assert_array_equal(new, [True, False, True, False, True, False])
    np.testing.assert_array_equal(new_connections(OLD, new), [False] * 4 + [True, False])


def test_regrow_keeps_the_count_and_breaks_ties_by_position() -> None:
    rng = np.random.default_rng(0)
    old = np.zeros((20, 30), dtype=bool)
    old.ravel()[rng.choice(600, 60, replace=False)] = True
    weights = rng.normal(size=old.shape)
    kept = drop_mask(old, weights, 18)
    for regrow_dropped in (True, False):
        new = regrow_mask(old, kept, np.zeros(old.shape), 18, regrow_dropped=regrow_dropped)
        assert new.sum() == 60 and (new & kept).sum() == 42
        grown = np.flatnonzero(new & ~kept)
        excluded = kept if regrow_dropped else old
        np.testing.assert_array_equal(grown, np.flatnonzero(~excluded.ravel())[:18])


def test_random_regrowth_is_the_same_rule_with_random_scores() -> None:
    old = np.array([True, True, False, False, False, False, False, False])
    kept = np.array([True, False, False, False, False, False, False, False])
    first = regrow_mask(old, kept, np.random.default_rng(5).random(8), 3)
    again = regrow_mask(old, kept, np.random.default_rng(5).random(8), 3)
    np.testing.assert_array_equal(first, again)
    assert first.sum() == 4 and first[0]


def test_regrow_rejects_bad_inputs() -> None:
    kept = drop_mask(OLD, WEIGHTS, 1)
    with pytest.raises(ValueError, match="only 3 candidate positions"):
        regrow_mask(OLD, kept, np.zeros(6), 4, regrow_dropped=False)
    with pytest.raises(ValueError, match="drop only removes"):
        regrow_mask(OLD, ~OLD, np.zeros(6), 1)
    with pytest.raises(ValueError, match="must have one shape"):
        regrow_mask(OLD, kept, np.zeros(5), 1)
