"""SNIP (Lee et al. 2019): one-shot pruning at initialisation by connection sensitivity |w·g|.

A dense twin of the model (same seed, every layer dense: the registry entry's `dense_settings`)
takes one batch; every sparse layer of the real model then keeps its `nnz` blocks of largest
summed |w·g| (block sums, so blocks of any size), holding the dense twin's initial weights there.
Each layer keeps its own density, as rigl's `SparseSnipOptimizer` does (the global variant is
`dynsparse.schedules.snip_global_masks`). After this the pattern is static.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from dynsparse.blocks import pool
from dynsparse.schedules import snip_scores, top_k_mask
from dynsparse.steps import loss_and_accuracy


def dense_twin_gradients(
    dense_model: Any, x: tf.Tensor, y: tf.Tensor
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{layer name: (initial kernel, its gradient on the batch)} of every dense layer."""
    layers = dense_model.layers
    kernels = [layer.kernel for layer in layers]
    with tf.GradientTape() as tape:
        loss, _ = loss_and_accuracy(dense_model(x, training=False), y)
    grads = tape.gradient(loss, kernels)
    return {
        layer.layer_name: (kernel.numpy(), grad.numpy())
        for layer, kernel, grad in zip(layers, kernels, grads, strict=True)
    }


def snip_blocks(
    kernel: np.ndarray, grad: np.ndarray, block_size: int, nnz: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rows, cols (sorted row-major) and values [nnz, bs, bs] of the nnz most sensitive blocks."""
    block_scores = pool(snip_scores(kernel, grad), block_size, "SUM")
    keep = top_k_mask(block_scores, nnz)
    rows, cols = np.nonzero(keep)  # row-major order
    n_in, n_out = kernel.shape
    tiles = kernel.reshape(n_in // block_size, block_size, n_out // block_size, block_size)
    values = tiles[rows, :, cols, :].astype(np.float32)
    return rows.astype(np.int32), cols.astype(np.int32), values


def prune_at_init(sparse_layers: list[Any], dense_model: Any, x: tf.Tensor, y: tf.Tensor) -> None:
    """Replace every sparse layer's random initial pattern by SNIP's, in place."""
    twin = dense_twin_gradients(dense_model, x, y)
    for layer in sparse_layers:
        kernel, grad = twin[layer.layer_name]
        rows, cols, values = snip_blocks(kernel, grad, layer.block_size, layer.nnz)
        layer.assign_pattern(rows, cols, values)
