"""The transformer's attention core against the formulations it replaced: bit for bit against the
split-then-transpose data movement, within float rounding against TensorFlow's softmax."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import tensorflow as tf
from dynsparse import ops
from dynsparse.models import merged_heads_output, multi_head_attention, qkv_heads


def split_then_transpose_attention(
    qkv: tf.Tensor, tokens: int, heads: int, head_size: int
) -> tf.Tensor:
    """The attention core's data movement as first written: split the last axis, transpose each
    part (with today's scaled softmax op)."""
    batch = tf.shape(qkv)[0]
    q, k, v = (
        tf.transpose(tf.reshape(part, [batch, tokens, heads, head_size]), [0, 2, 1, 3])
        for part in tf.split(qkv, 3, axis=-1)
    )
    weights = ops.scaled_softmax(tf.matmul(q, k, transpose_b=True), 1.0 / math.sqrt(head_size))
    attended = tf.matmul(weights, v)
    return tf.reshape(tf.transpose(attended, [0, 2, 1, 3]), [batch, tokens, heads * head_size])


def tensorflow_softmax_attention(
    qkv: tf.Tensor, tokens: int, heads: int, head_size: int
) -> tf.Tensor:
    """The attention with TensorFlow's softmax of the scaled scores, as before the native op."""
    batch = tf.shape(qkv)[0]
    q, k, v = tf.unstack(
        tf.transpose(tf.reshape(qkv, [batch, tokens, 3, heads, head_size]), [2, 0, 3, 1, 4])
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

    def from_heads(self, x: tf.Tensor) -> None:
        return None


def transpose_then_unstack_attention(
    qkv: tf.Tensor, tokens: int, heads: int, head_size: int
) -> tf.Tensor:
    """The attention core now: one transpose to [3, B, heads, T, d], then unstack; the heads
    merged by one transpose."""
    layer = RowMajorLayer()
    attended = multi_head_attention(*qkv_heads(layer, qkv, heads, head_size, None))
    return merged_heads_output(layer, attended, None)


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
    ops_library: object, batch: int, tokens: int, heads: int, head_size: int
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


@pytest.mark.parametrize(
    ("batch", "tokens", "heads", "head_size"), [(1, 3, 1, 4), (5, 7, 2, 8), (32, 28, 16, 32)]
)
def test_attention_agrees_with_tensorflows_softmax(
    ops_library: object, batch: int, tokens: int, heads: int, head_size: int
) -> None:
    """The native scaled softmax changes the attention's values and gradient only by float
    rounding (its exp and its sums' order), against TensorFlow's ops."""
    rng = np.random.default_rng(batch + 7)
    qkv = rng.normal(size=(batch, tokens, 3 * heads * head_size)).astype(np.float32)
    dy = rng.normal(size=(batch, tokens, heads * head_size)).astype(np.float32)
    shape = (tokens, heads, head_size)
    y, dqkv = values_and_gradient(transpose_then_unstack_attention, qkv, dy, shape)
    expected_y, expected_dqkv = values_and_gradient(tensorflow_softmax_attention, qkv, dy, shape)
    np.testing.assert_allclose(y, expected_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dqkv, expected_dqkv, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize(("block_size", "density"), [(1, 0.1), (8, 0.5), (16, 0.5)])
def test_sparse_attention_layers_use_the_heads_layout_bit_for_bit(
    ops_library: object, block_size: int, density: float
) -> None:
    """The sparse QKV layer writing the heads layout, and the output layer reading it, give the
    same values and gradients (input and both layers' values) as the row-major outputs
    transposed: the RigL update step, which captures row-major tensors, and the training step
    agree to the bit."""
    from dynsparse import ops
    from dynsparse.layers import SparseLinear

    ops.load_ops(ops_library)
    batch, tokens, width, heads, head_size = 3, 28, 32, 4, 16

    def sparse(n_in: int, n_out: int, seed: int) -> SparseLinear:
        return SparseLinear(
            n_in,
            n_out,
            density=density,
            block_size=block_size,
            pooling="NONE",
            use_bias=False,
            index_rng=np.random.default_rng(seed),
            value_rng=np.random.default_rng(seed + 1),
            name=f"layer{seed}",
        )

    qkv_layer, out_layer = (
        sparse(width, 3 * heads * head_size, 1),
        sparse(heads * head_size, width, 3),
    )
    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(size=(batch, tokens, width)).astype(np.float32))
    dy = tf.constant(rng.normal(size=(batch, tokens, width)).astype(np.float32))
    trainable = [x, qkv_layer.values, out_layer.values]

    @tf.function
    def run(capture: bool) -> list[tf.Tensor]:
        captured = [] if capture else None
        with tf.GradientTape() as tape:
            tape.watch(x)
            attended = multi_head_attention(*qkv_heads(qkv_layer, x, heads, head_size, captured))
            y = merged_heads_output(out_layer, attended, captured)
        return [y, *tape.gradient(y, trainable, output_gradients=dy)]

    assert qkv_layer.heads_output(x, 3, heads) is not None
    assert out_layer.from_heads(tf.zeros([batch, heads, tokens, head_size])) is not None
    fused, row_major = [[t.numpy() for t in run(capture)] for capture in (False, True)]
    names = ("y", "dx", "dvalues_qkv", "dvalues_out")
    for name, a, b in zip(names, fused, row_major, strict=True):
        assert np.array_equal(a, b), name


@pytest.mark.parametrize(("block_size", "density"), [(1, 0.1), (8, 0.5)])
def test_sparse_feed_forward_gelu_is_fused_bit_for_bit(
    ops_library: object, block_size: int, density: float
) -> None:
    """The transformer's first feed-forward layer with its GELU in the native op (the training
    step) gives the values and gradients of the layer followed by tf.nn.gelu (the RigL update
    step, which captures the pre-bias output), in graph mode as training runs both."""
    from dynsparse import ops
    from dynsparse.layers import SparseLinear

    ops.load_ops(ops_library)
    layer = SparseLinear(
        96,
        48,
        density=density,
        block_size=block_size,
        pooling="NONE",
        use_bias=True,
        index_rng=np.random.default_rng(1),
        value_rng=np.random.default_rng(2),
        name="ffn1",
    )
    rng = np.random.default_rng(6)
    x = tf.constant(rng.normal(size=(4, 28, 96)).astype(np.float32) * 3)
    dy = tf.constant(rng.normal(size=(4, 28, 48)).astype(np.float32))
    trainable = [x, layer.values, layer.bias]

    @tf.function
    def run(capture: bool) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, [] if capture else None, activation="gelu")
        return [y, *tape.gradient(y, trainable, output_gradients=dy)]

    graph = run.get_concrete_function(False).graph
    op_types = {op.type for op in graph.get_operations()}
    assert "Erfc" not in op_types
    layer_ops = [op for op in graph.get_operations() if op.type == "BsmmLayer"]
    assert [op.get_attr("activation") for op in layer_ops] == [b"GELU"]
    assert "Erfc" in {op.type for op in run.get_concrete_function(True).graph.get_operations()}
    fused, unfused = [[t.numpy() for t in run(capture)] for capture in (False, True)]
    for name, a, b in zip(("y", "dx", "dvalues", "dbias"), fused, unfused, strict=True):
        assert np.array_equal(a, b), name
