"""The compiled functions of a training run, shared by training and the training benchmark.

The ordinary training step runs inside a `tf.function` that loops over a chunk of batches (one
Python call per chunk, not per batch); the last batch before each RigL update runs in a second
`tf.function` that also returns every sparse layer's dense gradient |Xᵀ·dY| from the native op.
Each is traced once: an update assigns the new pattern and the re-laid-out optimizer slots to the
same variables, so nothing retraces.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Per-example cross-entropy [B] of integer labels, from TensorFlow's fused kernel.

    With op determinism on (as training runs), `tf.nn.sparse_softmax_cross_entropy_with_logits`
    builds about ten ops (log-softmax, a gather, checks of the label range) and as many again
    for its gradient; the fused kernel is one op each way, deterministic on the CPU, and rejects
    a label outside [0, classes) instead of returning NaN. The dense and the sparse models share
    it, so it shortens both steps alike.
    """
    loss, _ = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(features=logits, labels=labels)
    return loss


def mean_cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """The batch's mean cross-entropy; its gradient is the fused kernel's backprop ÷ B.

    Bitwise what `tf.reduce_mean(cross_entropy(...))` differentiates to (each of its tiled
    gradient entries is the same upstream ÷ B, multiplied into the backprop), in two ops instead
    of six (reshape, tile, divide, expand, multiply, reshape) per step.
    """

    @tf.custom_gradient
    def mean_loss(logits: tf.Tensor) -> tuple[tf.Tensor, Any]:
        loss, backprop = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(
            features=logits, labels=labels
        )
        # The static batch size where known: no shape ops in the step.
        batch = loss.shape[0]
        if batch is None:
            count = tf.cast(tf.shape(loss)[0], logits.dtype)
        else:
            count = tf.constant(batch, logits.dtype)

        def grad(upstream: tf.Tensor) -> tf.Tensor:
            return backprop * (upstream / count)

        return tf.reduce_mean(loss), grad

    return mean_loss(logits)


def accuracy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """The share of examples whose largest logit is at their label, over the last batch axis:
    [..., B, classes] and [..., B] give [...]."""
    correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels)
    return tf.reduce_mean(tf.cast(correct, tf.float32), axis=-1)


def loss_and_accuracy(logits: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean cross-entropy and accuracy of one batch."""
    return mean_cross_entropy(logits, labels), accuracy(logits, labels)


class StepFunctions:
    """The three compiled functions of a training run, each traced once (`traces` counts).

    - `train_chunk(batch_indices [n, B])`: n ordinary training steps in one call; per-batch loss
      and accuracy.
    - `update_step(indices [B])`: one training step that also returns every sparse layer's dense
      gradient |Xᵀ·dY| (dY by watching the layer's pre-bias output), for RigL.
    - `evaluate_batch(x, y)`: summed loss and number correct, no dropout.
    """

    def __init__(
        self,
        model: Any,
        optimizer: Any,
        x_train: Any,
        y_train: Any,
        batch_size: int,
        input_shape: tuple[int, ...],
    ) -> None:
        self.traces = {"train_chunk": 0, "update_step": 0, "evaluate": 0}
        trainable = list(model.trainable_variables)
        if [v.ref() for v in trainable] != [v.ref() for v in optimizer.variables_]:
            raise ValueError("the optimizer must hold the model's trainable variables in order")
        traces = self.traces

        @tf.function(input_signature=[tf.TensorSpec([None, batch_size], tf.int32)])
        def train_chunk(batch_indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            traces["train_chunk"] += 1
            n = tf.shape(batch_indices)[0]
            labels = tf.gather(y_train, batch_indices)
            losses = tf.TensorArray(tf.float32, size=n)
            # Each step's logits; the accuracies of all steps after the loop, in 4 ops instead
            # of 4 per step (the same numbers: counts of 0/1 over the batch).
            step_logits = tf.TensorArray(tf.float32, size=n)
            for i in tf.range(n):
                # Gathers rather than `[i]`: one op each instead of a strided slice and the two
                # packs of its bounds.
                x = tf.gather(x_train, tf.gather(batch_indices, i))
                with tf.GradientTape() as tape:
                    logits = model(x, training=True)
                    loss = mean_cross_entropy(logits, tf.gather(labels, i))
                optimizer.apply(tape.gradient(loss, trainable))
                losses = losses.write(i, loss)
                step_logits = step_logits.write(i, logits)
            return losses.stack(), accuracy(step_logits.stack(), labels)

        @tf.function(input_signature=[tf.TensorSpec([batch_size], tf.int32)])
        def update_step(indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor]]:
            traces["update_step"] += 1
            x = tf.gather(x_train, indices)
            y = tf.gather(y_train, indices)
            capture: list[Any] = []
            with tf.GradientTape() as tape:
                loss, accuracy = loss_and_accuracy(model(x, training=True, capture=capture), y)
            pre_bias = [c.pre_bias for c in capture]
            gradients = tape.gradient(loss, trainable + pre_bias)
            optimizer.apply(gradients[: len(trainable)])
            dense = [
                c.layer.dense_grad(c.x, dy)
                for c, dy in zip(capture, gradients[len(trainable) :], strict=True)
            ]
            return loss, accuracy, dense

        test_spec = tf.TensorSpec([None, *input_shape], tf.uint8)

        @tf.function(input_signature=[test_spec, tf.TensorSpec([None], tf.int32)])
        def evaluate_batch(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            traces["evaluate"] += 1
            logits = model(x, training=False)
            losses = cross_entropy(logits, y)
            correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y)
            return tf.reduce_sum(losses), tf.reduce_sum(tf.cast(correct, tf.int32))

        self.train_chunk = train_chunk
        self.update_step = update_step
        self.evaluate_batch = evaluate_batch
