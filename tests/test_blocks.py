"""The numpy core: block layouts; block sizes and poolings agreed by Python, C++ and schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dynsparse import blocks
from dynsparse.config import load_schema
from dynsparse.methods import CONFIG_METHODS, METHODS


def test_schema_allows_exactly_the_python_sets() -> None:
    defs = load_schema()["$defs"]
    assert tuple(defs["block_size"]["enum"]) == blocks.BLOCK_SIZES
    assert tuple(defs["pooling"]["enum"]) == blocks.POOLINGS
    assert tuple(defs["method"]["enum"]) == CONFIG_METHODS
    assert set(CONFIG_METHODS) <= set(METHODS)


def test_the_loaded_ops_accept_exactly_the_python_sets(ops_library: Path) -> None:
    import tensorflow as tf
    from dynsparse import ops
    from tensorflow.python.framework import op_def_registry

    accepted = []
    for bs in range(1, 33):
        x = tf.ones([2, bs])
        values = tf.ones([1, bs, bs])
        index = tf.zeros([1], tf.int32)
        try:
            ops.loaded_ops().bsmm_forward(x, values, index, index, block_size=bs, n_out=bs)
        except (tf.errors.InvalidArgumentError, ValueError):
            continue
        accepted.append(bs)
    assert tuple(accepted) == blocks.BLOCK_SIZES
    op_def = op_def_registry.get("BsmmDenseGrad")
    (pooling,) = [attr for attr in op_def.attr if attr.name == "pooling"]
    allowed = [value.decode() for value in pooling.allowed_values.list.s]
    assert tuple(allowed) == blocks.POOLINGS


def test_dense_mask_and_gather_agree() -> None:
    rng = np.random.default_rng(0)
    rows, cols = blocks.random_pattern((3, 4), 5, rng)
    values = rng.normal(size=(5, 2, 2)).astype(np.float32)
    dense = blocks.to_dense(rows, cols, values, (6, 8))
    mask = blocks.to_mask(rows, cols, 2, (6, 8))
    assert mask.sum() == 5 * 4 and not dense[~mask].any()
    np.testing.assert_array_equal(blocks.gather_blocks(dense, rows, cols, 2), values)
    pooled = blocks.pool(np.abs(dense), 2, "SUM")
    np.testing.assert_allclose(pooled[rows, cols], np.abs(values).sum(axis=(1, 2)), rtol=1e-6)
    assert pooled.sum() == pytest.approx(np.abs(values).sum(), rel=1e-6)


def test_random_pattern_order() -> None:
    grid = (7, 9)
    rows, cols = blocks.random_pattern(grid, 20, np.random.default_rng(1))
    flat = rows.astype(np.int64) * grid[1] + cols
    assert np.all(np.diff(flat) > 0)
    rows_u, cols_u = blocks.random_pattern(grid, 20, np.random.default_rng(1), sort=False)
    assert sorted((rows_u.astype(np.int64) * grid[1] + cols_u).tolist()) == flat.tolist()
    with pytest.raises(ValueError):
        blocks.random_pattern(grid, 64, np.random.default_rng(1))
