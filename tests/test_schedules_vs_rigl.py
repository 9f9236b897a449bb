"""The Graphcore candidate rule of dynsparse.schedules reproduces the registry's RigL update.

Ties in weights and gradients included, so the two agree on tie-breaks too.
"""

from __future__ import annotations

import numpy as np
import pytest
from dynsparse.blocks import random_pattern
from dynsparse.methods import method_of
from dynsparse.schedules import drop_mask, regrow_mask


@pytest.mark.parametrize("trial", range(40))
def test_graphcore_rule_matches_rigl_update_pattern(trial: int) -> None:
    rng = np.random.default_rng(trial)
    shape = (int(rng.integers(5, 40)), int(rng.integers(5, 40)))
    nnz = int(rng.integers(2, shape[0] * shape[1] // 2))
    rows, cols = random_pattern(shape, nnz, rng)
    values = rng.normal(size=nnz).astype(np.float32)
    grad = np.abs(rng.normal(size=shape))
    if trial % 2:
        values, grad = np.round(values, 1), np.round(grad, 1)
    k = int(rng.integers(0, nnz))
    update = method_of("rigl").update_pattern(
        rows, cols, values.reshape(-1, 1, 1), grid_shape=shape, block_size=1, k=k, dense_grad=grad
    )
    expected = np.zeros(shape, dtype=bool)
    expected[update.rows, update.cols] = True

    old = np.zeros(shape, dtype=bool)
    old[rows, cols] = True
    weights = np.zeros(shape)
    weights[rows, cols] = values
    kept = drop_mask(old, weights, k)
    np.testing.assert_array_equal(regrow_mask(old, kept, grad, k, regrow_dropped=False), expected)
