"""The transformer's attention core against the formulation it replaced, bit for bit."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import tensorflow as tf
from dynsparse.models import multi_head_attention, qkv_heads


def split_then_transpose_attention(
    qkv: tf.Tensor, tokens: int, heads: int, head_size: int
) -> tf.Tensor:
    """The attention core as first written: split the last axis, transpose each part."""
    batch = tf.shape(qkv)[0]
    q, k, v = (
        tf.transpose(tf.reshape(part, [batch, tokens, heads, head_size]), [0, 2, 1, 3])
        for part in tf.split(qkv, 3, axis=-1)
    )
    scores = tf.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(head_size))
    attended = tf.matmul(tf.nn.softmax(scores, axis=-1), v)
    return tf.reshape(tf.transpose(attended, [0, 2, 1, 3]), [batch, tokens, heads * head_size])


class RowMajorLayer:
    """A layer whose output is its input, written row-major (as a dense layer's)."""

    def __call__(self, x: tf.Tensor, capture: object = None) -> tf.Tensor:
        return x

    def heads_output(self, x: tf.Tensor, parts: int, heads: int) -> None:
        return None


def transpose_then_unstack_attention(
    qkv: tf.Tensor, tokens: int, heads: int, head_size: int
) -> tf.Tensor:
    """The attention core now: one transpose to [3, B, heads, T, d], then unstack."""
    return multi_head_attention(qkv_heads(RowMajorLayer(), qkv, heads, head_size, None))


Attention = Callable[[tf.Tensor, int, int, int], tf.Tensor]


def values_and_gradient(
    attention: Attention, qkv: np.ndarray, dy: np.ndarray, shape: tuple[int, int, int]
) -> list[np.ndarray]:
    tokens, heads, head_size = shape

    @tf.function  # graph mode, as in training (TensorFlow rewrites some ops there)
    def run(qkv: tf.Tensor, dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(qkv)
            y = attention(qkv, tokens, heads, head_size)
        return y, tape.gradient(y, qkv, output_gradients=dy)

    return [t.numpy() for t in run(tf.constant(qkv), tf.constant(dy))]


@pytest.mark.parametrize(
    ("batch", "tokens", "heads", "head_size"), [(1, 3, 1, 4), (5, 7, 2, 8), (32, 28, 16, 32)]
)
def test_attention_is_bitwise_the_split_formulation(
    batch: int, tokens: int, heads: int, head_size: int
) -> None:
    """Values and gradient equal the split-then-transpose formulation's, so training results did
    not change with the cheaper data movement."""
    rng = np.random.default_rng(batch)
    qkv = rng.normal(size=(batch, tokens, 3 * heads * head_size)).astype(np.float32)
    dy = rng.normal(size=(batch, tokens, heads * head_size)).astype(np.float32)
    shape = (tokens, heads, head_size)
    y, dqkv = values_and_gradient(transpose_then_unstack_attention, qkv, dy, shape)
    expected_y, expected_dqkv = values_and_gradient(split_then_transpose_attention, qkv, dy, shape)
    assert np.array_equal(y, expected_y)
    assert np.array_equal(dqkv, expected_dqkv)


@pytest.mark.parametrize(("block_size", "density"), [(1, 0.1), (8, 0.5), (16, 0.5)])
def test_sparse_qkv_writes_the_heads_layout_bit_for_bit(
    ops_library: object, block_size: int, density: float
) -> None:
    """The sparse QKV layer's native heads layout gives the attention the same values and
    gradients (input and values) as its row-major output transposed: the RigL update step, which
    captures the row-major output, and the training step agree to the bit."""
    from dynsparse import ops
    from dynsparse.layers import SparseLinear

    ops.load_ops(ops_library)
    batch, tokens, width, heads, head_size = 3, 28, 32, 4, 16
    layer = SparseLinear(
        width,
        3 * heads * head_size,
        density=density,
        block_size=block_size,
        pooling="NONE",
        use_bias=False,
        index_rng=np.random.default_rng(1),
        value_rng=np.random.default_rng(2),
        name="qkv",
    )
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(batch, tokens, width)).astype(np.float32))
    dy = tf.constant(rng.normal(size=(batch, tokens, heads * head_size)).astype(np.float32))

    @tf.function
    def run(capture: bool) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            heads_first = qkv_heads(layer, x, heads, head_size, [] if capture else None)
            y = multi_head_attention(heads_first)
        return [y, *tape.gradient(y, [x, layer.values], output_gradients=dy)]

    assert layer.heads_output(x, 3, heads) is not None
    fused, transposed = [[t.numpy() for t in run(capture)] for capture in (False, True)]
    for name, a, b in zip(("attention", "dx", "dvalues"), fused, transposed, strict=True):
        assert np.array_equal(a, b), name
