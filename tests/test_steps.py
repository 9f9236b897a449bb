"""The training step's pieces that must stay bitwise what TensorFlow's generic ops compute."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")


@pytest.mark.parametrize("batch", [1, 7, 16])
def test_mean_cross_entropy_is_bitwise_the_reduce_mean_of_the_fused_kernel(batch: int) -> None:
    from dynsparse.steps import cross_entropy, mean_cross_entropy

    rng = np.random.default_rng(batch)
    logits = tf.constant(rng.normal(scale=3.0, size=(batch, 10)).astype(np.float32))
    labels = tf.constant(rng.integers(0, 10, size=batch).astype(np.int32))

    @tf.function
    def both(logits: tf.Tensor) -> tuple[tf.Tensor, ...]:
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(logits)
            ours = mean_cross_entropy(logits, labels) * 3.0
            reference = tf.reduce_mean(cross_entropy(logits, labels)) * 3.0
        return ours, reference, tape.gradient(ours, logits), tape.gradient(reference, logits)

    ours, reference, ours_grad, reference_grad = (t.numpy() for t in both(logits))
    assert ours.tobytes() == reference.tobytes()
    assert np.abs(ours_grad).max() > 0
    assert ours_grad.tobytes() == reference_grad.tobytes()
