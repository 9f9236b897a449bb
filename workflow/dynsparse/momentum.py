"""The training chunk of sparse momentum (SNFS): every step also averages the dense gradient.

SNFS (Dettmers & Zettlemoyer 2019) grows where the exponential moving average of the dense
gradient is largest, so unlike RigL it needs the dense gradient xᵀ·dy of every sparse layer on
*every* step, not only before an update: one dense [n_in, n_out] matmul per sparse layer per step,
the cost that `snfs` pays over `rigl` (measured in the README). The average starts at zero and is
m·average + (1 − m)·g with m = 0.9, as rigl's `SparseMomentumOptimizer` (and
`dynsparse.schedules.ema_update`, its numpy reference) does; the update scores regrowth by its
absolute value, SUM-pooled to the block grid like an element gradient.

The averages are variables of the run, checkpointed with the model, so a resumed run matches an
uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from dynsparse.schedules import SNFS_MOMENTUM
from dynsparse.steps import StepFunctions, loss_and_accuracy


def signed_dense_grad(x: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
    """xᵀ·dy [n_in, n_out] over every row of a batch (inputs of rank > 2 flattened)."""
    x2 = tf.reshape(x, [-1, tf.shape(x)[-1]])
    dy2 = tf.reshape(dy, [-1, tf.shape(dy)[-1]])
    return tf.matmul(x2, dy2, transpose_a=True)


class MomentumStepFunctions(StepFunctions):
    """`StepFunctions` whose `train_chunk` also updates `averages` (one per sparse layer)."""

    def __init__(
        self,
        model: Any,
        optimizer: Any,
        x_train: Any,
        y_train: Any,
        batch_size: int,
        input_shape: tuple[int, ...],
        momentum: float = SNFS_MOMENTUM,
    ) -> None:
        super().__init__(model, optimizer, x_train, y_train, batch_size, input_shape)
        self.averages = [
            tf.Variable(tf.zeros([layer.n_in, layer.n_out]), trainable=False, name="grad_average")
            for layer in model.sparse_layers
        ]
        trainable = list(model.trainable_variables)
        averages, traces = self.averages, self.traces

        @tf.function(input_signature=[tf.TensorSpec([None, batch_size], tf.int32)])
        def train_chunk(batch_indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            traces["train_chunk"] += 1
            n = tf.shape(batch_indices)[0]
            losses = tf.TensorArray(tf.float32, size=n)
            accuracies = tf.TensorArray(tf.float32, size=n)
            for i in tf.range(n):
                indices = batch_indices[i]
                x = tf.gather(x_train, indices)
                y = tf.gather(y_train, indices)
                capture: list[Any] = []
                with tf.GradientTape() as tape:
                    loss, accuracy = loss_and_accuracy(model(x, training=True, capture=capture), y)
                pre_bias = [c.pre_bias for c in capture]
                gradients = tape.gradient(loss, trainable + pre_bias)
                optimizer.apply(gradients[: len(trainable)])
                for average, c, dy in zip(
                    averages, capture, gradients[len(trainable) :], strict=True
                ):
                    grad = signed_dense_grad(c.x, dy)
                    average.assign(momentum * average + (1.0 - momentum) * grad)
                losses = losses.write(i, loss)
                accuracies = accuracies.write(i, accuracy)
            return losses.stack(), accuracies.stack()

        self.train_chunk = train_chunk
