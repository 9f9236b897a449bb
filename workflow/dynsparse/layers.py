"""Block-sparse and dense linear layers, and small optimizers whose slots we control.

`SparseLinear` holds a fixed-capacity block-sparse weight (values [nnz, bs, bs], rows, cols) and
computes with the native `bsmm` op. A RigL update assigns a new pattern in place (no retrace) and
`Optimizer.relayout` moves the optimizer slots with the blocks: kept blocks keep their state,
regrown ones start at zero. With `variable_blocks` the block count may shrink (gradual magnitude
pruning): values, rows, cols and the optimizer slots have a dynamic first dimension, so a smaller
pattern is assigned in place without a retrace.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from dynsparse import ops, rigl
from dynsparse.blocks import POOLINGS, random_pattern

# A layer's activation after its bias (SparseLinear fuses these into its native op, with the same
# bits). GELU is the exact one (erfc), tf.nn.gelu's default.
ACTIVATIONS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "none": tf.identity,
    "relu": tf.nn.relu,
    "gelu": tf.nn.gelu,
}


def activate(y: tf.Tensor, activation: str) -> tf.Tensor:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)}")
    return y if activation == "none" else ACTIVATIONS[activation](y)


@dataclass
class Captured:
    """A sparse layer's input and pre-bias output, for the update step's dense gradient."""

    layer: SparseLinear
    x: tf.Tensor  # [M, n_in]
    pre_bias: tf.Tensor  # [M, n_out]


class SparseLinear(tf.Module):
    """y = x·W (+ b) with W [n_in, n_out] block-sparse: `nnz` blocks of bs×bs.

    Inputs of rank > 2 are flattened to [M, n_in] for the op and reshaped back.
    `variable_blocks`: `assign_pattern` may take fewer blocks than the layer has now.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        *,
        density: float,
        block_size: int,
        pooling: str,
        use_bias: bool,
        index_rng: np.random.Generator,
        value_rng: np.random.Generator,
        name: str,
        variable_blocks: bool = False,
    ) -> None:
        super().__init__(name=name)
        if n_in % block_size or n_out % block_size:
            raise ValueError(f"{name}: {n_in}×{n_out} is not a multiple of block size {block_size}")
        if pooling not in POOLINGS:
            raise ValueError(f"{name}: unknown pooling {pooling!r}")
        self.layer_name = name
        self.n_in = n_in
        self.n_out = n_out
        self.block_size = block_size
        self.pooling = pooling
        self.density = density
        self.grid_shape = (n_in // block_size, n_out // block_size)
        self.variable_blocks = variable_blocks
        nnz = rigl.block_count(density, n_in, n_out, block_size)
        rows, cols = random_pattern(self.grid_shape, nnz, index_rng)
        limit = rigl.init_limit(n_in, n_out, density)
        values = value_rng.uniform(-limit, limit, size=nnz * block_size * block_size)
        # None: the first dimension may change (a checkpoint of a shrunk layer restores too).
        count = None if variable_blocks else nnz
        self.values = tf.Variable(
            values.reshape(nnz, block_size, block_size).astype(np.float32),
            shape=tf.TensorShape([count, block_size, block_size]),
            name="values",
        )
        self.rows = tf.Variable(rows, trainable=False, name="rows", dtype=tf.int32, shape=[count])
        self.cols = tf.Variable(cols, trainable=False, name="cols", dtype=tf.int32, shape=[count])
        self.bias = tf.Variable(tf.zeros([n_out]), name="bias") if use_bias else None

    def __call__(
        self, x: tf.Tensor, capture: list[Captured] | None = None, activation: str = "none"
    ) -> tf.Tensor:
        """activation(x·W + b); `activation` one of ACTIVATIONS."""
        # A rank-2 input goes to the op as it is: the reshapes there and back, and their
        # gradients, are six small ops a step (~1 µs each) for nothing.
        x2 = x if x.shape.rank == 2 else tf.reshape(x, [-1, self.n_in])
        if capture is None and self.bias is not None:
            # Product, bias and activation in one op each way (the same numbers).
            y = ops.bsmm_layer(x2, self.values, self.rows, self.cols, self.bias, activation)
        else:
            pre_bias = ops.bsmm(x2, self.values, self.rows, self.cols, n_out=self.n_out)
            if capture is not None:
                capture.append(Captured(self, x2, pre_bias))
            y = pre_bias if self.bias is None else pre_bias + self.bias
            y = activate(y, activation)
        if x.shape.rank == 2:
            return y
        return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [self.n_out]], axis=0))

    def heads_output(self, x: tf.Tensor, parts: int, heads: int) -> list[tf.Tensor] | None:
        """x·W for x [B, T, n_in] as `parts` tensors [B, heads, T, n_out / (parts·heads)] written
        by the native op itself (an attention's Q, K, V in the layout its batched products read,
        with no transpose or stack either way), or None where the op cannot write that layout: a
        bias, block size 4, or a head size that is not a multiple of 8 and of the block size."""
        if self.bias is not None or self.block_size == 4 or self.n_out % (parts * heads):
            return None
        head_size = self.n_out // (parts * heads)
        if head_size % 8 or head_size % self.block_size:
            return None
        return ops.bsmm_heads(x, self.values, self.rows, self.cols, self.n_out, parts, heads)

    def from_heads(self, x: tf.Tensor) -> tf.Tensor | None:
        """(x·W + b) for x [B, heads, T, head_size] read by the native op itself as the rows
        [B·T, heads·head_size] (an attention's output, its heads merged with no transpose either
        way); [B, T, n_out]. None where the op cannot read that layout: block size 4, or a head
        size that is not a multiple of 8 and of the block size."""
        head_size = x.shape[-1]
        if (
            self.block_size == 4
            or head_size is None
            or head_size % 8
            or head_size % self.block_size
        ):
            return None
        y = ops.bsmm_from_heads(x, self.values, self.rows, self.cols, self.n_out)
        return y if self.bias is None else y + self.bias

    def dense_grad(self, x: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
        """|xᵀ·dy|, [n_in, n_out] for pooling NONE, else pooled to the block grid."""
        pooling = self.pooling if self.block_size > 1 else "NONE"
        return ops.bsmm_dense_grad(x, dy, block_size=self.block_size, pooling=pooling)

    @property
    def nnz(self) -> int:
        """The number of blocks held now (eager only)."""
        return int(self.rows.value().shape[0])

    def pattern(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.rows.numpy(), self.cols.numpy(), self.values.numpy()

    def assign_pattern(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> None:
        n, bs = len(rows), self.block_size
        fits = n == self.nnz or (self.variable_blocks and n <= self.nnz)
        if not fits or len(cols) != n or values.shape != (n, bs, bs):
            kept = "at most" if self.variable_blocks else "exactly"
            raise ValueError(
                f"{self.layer_name}: the new pattern must hold {kept} {self.nnz} blocks of "
                f"{bs}x{bs}, got {n} rows, {len(cols)} cols and values {values.shape}"
            )
        self.rows.assign(rows.astype(np.int32))
        self.cols.assign(cols.astype(np.int32))
        self.values.assign(values.astype(np.float32))

    @property
    def parameter_count(self) -> int:
        bias = 0 if self.bias is None else self.n_out
        return self.nnz * self.block_size**2 + bias


class DenseLinear(tf.Module):
    """y = x·W + b with glorot-uniform W and zero b."""

    def __init__(
        self, n_in: int, n_out: int, *, use_bias: bool, value_rng: np.random.Generator, name: str
    ) -> None:
        super().__init__(name=name)
        self.layer_name = name
        self.n_in = n_in
        self.n_out = n_out
        limit = math.sqrt(6.0 / (n_in + n_out))
        kernel = value_rng.uniform(-limit, limit, size=(n_in, n_out)).astype(np.float32)
        self.kernel = tf.Variable(kernel, name="kernel")
        self.bias = tf.Variable(tf.zeros([n_out]), name="bias") if use_bias else None

    def __call__(
        self, x: tf.Tensor, capture: list[Captured] | None = None, activation: str = "none"
    ) -> tf.Tensor:
        """activation(x·W + b) (TensorFlow's graph optimizer fuses the three on the CPU)."""
        y = tf.tensordot(x, self.kernel, axes=1) if x.shape.rank != 2 else x @ self.kernel
        return activate(y if self.bias is None else y + self.bias, activation)

    def heads_output(self, x: tf.Tensor, parts: int, heads: int) -> list[tf.Tensor] | None:
        """None: TensorFlow's matmul writes rows, transposed by the attention (SparseLinear)."""
        return None

    def from_heads(self, x: tf.Tensor) -> tf.Tensor | None:
        """None: TensorFlow's matmul reads rows; the attention merges its heads first."""
        return None

    @property
    def parameter_count(self) -> int:
        return self.n_in * self.n_out + (0 if self.bias is None else self.n_out)


# --- optimizers ----------------------------------------------------------------------------


class Optimizer(tf.Module):
    """Plain TF1-style optimizers with slot variables we can re-lay out.

    With the native ops loaded, Momentum and Adam update every variable in one fused op
    (`DynsparseApply*`: TensorFlow's arithmetic, fewer ops per step); without them, TensorFlow's
    per-variable kernels. The learning rate is a variable, so a schedule never retraces the
    training function.
    """

    slot_names: tuple[str, ...] = ()

    def __init__(self, variables: Sequence[tf.Variable], name: str) -> None:
        super().__init__(name=name)
        self.learning_rate = tf.Variable(0.0, trainable=False, name="learning_rate")
        self.variables_ = list(variables)
        self.slots: dict[str, list[tf.Variable]] = {
            slot: [
                tf.Variable(tf.zeros_like(v), trainable=False, name=f"{slot}_{i}", shape=v.shape)
                for i, v in enumerate(self.variables_)
            ]
            for slot in self.slot_names
        }
        self._index = {v.ref(): i for i, v in enumerate(self.variables_)}

    def apply(self, grads: Sequence[tf.Tensor]) -> None:
        raise NotImplementedError

    def slots_of(self, variable: tf.Variable) -> dict[str, tf.Variable]:
        i = self._index[variable.ref()]
        return {slot: self.slots[slot][i] for slot in self.slot_names}

    def relayout(self, variable: tf.Variable, gather: Callable[[np.ndarray], np.ndarray]) -> None:
        """Move every slot of `variable` as its blocks moved (`PatternUpdate.gather`)."""
        for slot_variable in self.slots_of(variable).values():
            slot_variable.assign(gather(slot_variable.numpy()))


class GradientDescent(Optimizer):
    def __init__(self, variables: Sequence[tf.Variable]) -> None:
        super().__init__(variables, name="GradientDescent")

    def apply(self, grads: Sequence[tf.Tensor]) -> None:
        for variable, grad in zip(self.variables_, grads, strict=True):
            tf.raw_ops.ResourceApplyGradientDescent(
                var=variable.handle, alpha=self.learning_rate, delta=grad
            )


class Momentum(Optimizer):
    slot_names = ("momentum",)

    def __init__(
        self, variables: Sequence[tf.Variable], momentum: float = 1e-4, nesterov: bool = True
    ) -> None:
        super().__init__(variables, name="Momentum")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def apply(self, grads: Sequence[tf.Tensor]) -> None:
        if ops.is_loaded():
            ops.loaded_ops().dynsparse_apply_momentum(
                vars=[v.handle for v in self.variables_],
                accum=[a.handle for a in self.slots["momentum"]],
                grads=list(grads),
                lr=self.learning_rate.handle,
                momentum=self.momentum,
                use_nesterov=self.nesterov,
            )
            return
        self._apply_per_variable(grads)

    def _apply_per_variable(self, grads: Sequence[tf.Tensor]) -> None:
        """TensorFlow's own kernel, one op per variable (without the native ops library)."""
        for variable, accum, grad in zip(
            self.variables_, self.slots["momentum"], grads, strict=True
        ):
            tf.raw_ops.ResourceApplyMomentum(
                var=variable.handle,
                accum=accum.handle,
                lr=self.learning_rate,
                grad=grad,
                momentum=tf.constant(self.momentum),
                use_nesterov=self.nesterov,
            )


class Adam(Optimizer):
    """TF1 AdamOptimizer: bias correction through beta powers that RigL never touches."""

    slot_names = ("m", "v")

    def __init__(
        self,
        variables: Sequence[tf.Variable],
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
    ) -> None:
        super().__init__(variables, name="Adam")
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.epsilon = float(epsilon)
        self.beta1_power = tf.Variable(self.beta1, trainable=False, name="beta1_power")
        self.beta2_power = tf.Variable(self.beta2, trainable=False, name="beta2_power")

    def apply(self, grads: Sequence[tf.Tensor]) -> None:
        if ops.is_loaded():
            ops.loaded_ops().dynsparse_apply_adam(
                vars=[v.handle for v in self.variables_],
                m=[m.handle for m in self.slots["m"]],
                v=[v.handle for v in self.slots["v"]],
                grads=list(grads),
                lr=self.learning_rate.handle,
                beta1_power=self.beta1_power.handle,
                beta2_power=self.beta2_power.handle,
                beta1=self.beta1,
                beta2=self.beta2,
                epsilon=self.epsilon,
            )
            return
        self._apply_per_variable(grads)

    def _apply_per_variable(self, grads: Sequence[tf.Tensor]) -> None:
        """TensorFlow's own kernel, one op per variable (without the native ops library)."""
        for variable, m, v, grad in zip(
            self.variables_, self.slots["m"], self.slots["v"], grads, strict=True
        ):
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle,
                m=m.handle,
                v=v.handle,
                beta1_power=self.beta1_power,
                beta2_power=self.beta2_power,
                lr=self.learning_rate,
                beta1=tf.constant(self.beta1),
                beta2=tf.constant(self.beta2),
                epsilon=tf.constant(self.epsilon),
                grad=grad,
            )
        self.beta1_power.assign(self.beta1_power * self.beta1)
        self.beta2_power.assign(self.beta2_power * self.beta2)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "GradientDescent": GradientDescent,
    "Momentum": Momentum,
    "Adam": Adam,
}


def make_optimizer(name: str, variables: Sequence[tf.Variable], args: dict[str, Any]) -> Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}")
    try:
        return OPTIMIZERS[name](variables, **args)
    except TypeError as error:
        raise ValueError(f"bad optimizer_args for {name}: {args} ({error})") from None
