"""The transformer's attention core against the formulation it replaced, bit for bit."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import tensorflow as tf
from dynsparse.models import multi_head_attention


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
    y, dqkv = values_and_gradient(multi_head_attention, qkv, dy, shape)
    expected_y, expected_dqkv = values_and_gradient(split_then_transpose_attention, qkv, dy, shape)
    assert np.array_equal(y, expected_y)
    assert np.array_equal(dqkv, expected_dqkv)
