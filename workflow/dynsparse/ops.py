"""Python side of the block-sparse matmul ops: loading, wrappers and the registered gradient.

A sparse weight W [n_in, n_out] with square blocks of size bs is held as `values [nnz, bs, bs]`,
`rows int32 [nnz]`, `cols int32 [nnz]` (block coordinates). `rows`, `cols` and `values` may be
`tf.Variable`s updated in place between calls; pass them directly (no retracing).

TensorFlow registers the ops of a library once per process, and loading the same library through
a second path gives a module without them, so `load_ops` loads from one absolute path only.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from dynsparse.blocks import BLOCK_SIZES, POOLINGS

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["BLOCK_SIZES", "POOLINGS"]
OP_NAMES = (
    "BsmmForward",
    "BsmmInputGrad",
    "BsmmValuesGrad",
    "BsmmBackward",
    "BsmmLayer",
    "BsmmLayerBackward",
    "BsmmDenseGrad",
    "BsmmIsa",
    "DynsparseApplyAdam",
    "DynsparseApplyMomentum",
    "DynsparseDropout",
    "DynsparseScaledSoftmax",
    "DynsparseScaledSoftmaxGrad",
    "DynsparseGroupNorm",
    "DynsparseGroupNormGrad",
)
# Ops with a gradient of their own (registered by `_register_gradients`); the rest have none.
DIFFERENTIABLE_OPS = (
    "BsmmForward",
    "BsmmLayer",
    "DynsparseDropout",
    "DynsparseScaledSoftmax",
    "DynsparseGroupNorm",
)
# The activations BsmmLayer applies after its bias, by the names the Python side uses.
LAYER_ACTIVATIONS = {"none": "NONE", "relu": "RELU", "gelu": "GELU"}
# The instruction-set variants compiled into the library, narrowest first. The widest one the CPU
# supports is used unless the environment variable ISA_ENV_VAR names another when the library is
# loaded; `select_isa` switches later.
ISAS = ("avx2", "avx512")
ISA_ENV_VAR = "DYNSPARSE_ISA"

T = TypeVar("T")

_lock = threading.Lock()
_module: ModuleType | None = None
_module_path: Path | None = None


def load_ops(path: str | Path) -> ModuleType:
    """Load the ops library once per process and register the gradient of `BsmmForward`.

    A second call with the same path returns the same module; a different path raises
    RuntimeError, since TensorFlow would silently return a module without the ops.
    """
    global _module, _module_path
    resolved = Path(path).resolve()
    with _lock:
        if _module is not None:
            if resolved != _module_path:
                raise RuntimeError(
                    f"The dynsparse ops are already loaded from {_module_path}; they cannot be "
                    f"loaded again from {resolved} in the same process (TensorFlow registers an "
                    "op name once). Load one library path per process."
                )
            return _module
        if not resolved.is_file():
            raise FileNotFoundError(
                f"ops library {resolved} does not exist; build it first (Snakemake rule "
                "build_ops, or dynsparse.build.build_ops)"
            )
        import tensorflow as tf

        module = tf.load_op_library(str(resolved))
        missing = [name for name in OP_NAMES if not hasattr(module, _snake_case(name))]
        if missing:
            raise RuntimeError(
                f"{resolved} loaded without the ops {missing}: they were registered earlier in "
                "this process from another library file. Load one library path per process."
            )
        _register_gradients()
        _module, _module_path = module, resolved
        return module


def is_loaded() -> bool:
    """Whether `load_ops` ran in this process."""
    return _module is not None


def loaded_ops() -> ModuleType:
    """The module from `load_ops`; raises if the ops were not loaded in this process."""
    if _module is None:
        raise RuntimeError(
            "dynsparse ops are not loaded; call dynsparse.ops.load_ops(<path to "
            "libdynsparse_ops.so>) first"
        )
    return _module


def kernel_isa() -> str:
    """The instruction-set variant the kernels use now (one of ISAS)."""
    active, _ = loaded_ops().bsmm_isa()
    return active.numpy().decode()


def supported_isas() -> tuple[str, ...]:
    """The variants this CPU can run, narrowest first."""
    _, supported = loaded_ops().bsmm_isa()
    return tuple(name.decode() for name in supported.numpy())


def select_isa(isa: str) -> str:
    """Switch every kernel of this process to `isa`; returns the variant used before."""
    if isa not in ISAS:
        raise ValueError(f"unknown instruction-set variant {isa!r}; use one of {ISAS}")
    previous = kernel_isa()
    supported = supported_isas()
    if isa not in supported:
        raise ValueError(f"this CPU cannot run the {isa} kernels; it supports {supported}")
    loaded_ops().bsmm_isa(select=isa)
    return previous


@contextlib.contextmanager
def using_isa(isa: str) -> Iterator[None]:
    """Run the block inside with the kernels of `isa`, then switch back."""
    previous = select_isa(isa)
    try:
        yield
    finally:
        select_isa(previous)


def on_each_isa(run: Callable[[], T]) -> dict[str, T]:
    """`run()` once per variant this CPU supports (narrowest first), with that variant selected."""
    results = {}
    for isa in supported_isas():
        with using_isa(isa):
            results[isa] = run()
    return results


def _snake_case(op_name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in op_name).lstrip("_")


def _register_gradients() -> None:
    import tensorflow as tf

    registrations: list[Callable[[], Any]] = [
        lambda: tf.RegisterGradient("BsmmForward")(_bsmm_forward_grad),
        lambda: tf.RegisterGradient("BsmmLayer")(_bsmm_layer_grad),
        lambda: tf.RegisterGradient("DynsparseDropout")(_dropout_grad),
        lambda: tf.RegisterGradient("DynsparseScaledSoftmax")(_scaled_softmax_grad),
        lambda: tf.RegisterGradient("DynsparseGroupNorm")(_group_norm_grad),
    ]
    registrations += [
        functools.partial(tf.no_gradient, name)
        for name in OP_NAMES
        if name not in DIFFERENTIABLE_OPS
    ]
    for register in registrations:
        # KeyError: already registered by another copy of this module (imported under two names),
        # whose gradient function is the same.
        with contextlib.suppress(KeyError):
            register()


def _bsmm_forward_grad(op: Any, dy: tf.Tensor) -> list[tf.Tensor | None]:
    """dX = dY . W^T and dValues = (X^T . dY) at the non-zero blocks, in one op that reads dY once
    (BsmmBackward, in dY's layout); none for rows/cols."""
    module = loaded_ops()
    x, values, rows, cols = op.inputs
    block_size = op.get_attr("block_size")
    heads_layout = list(op.get_attr("heads_layout"))
    input_heads_layout = list(op.get_attr("input_heads_layout"))
    n_in = x.shape[-1] if not input_heads_layout else None
    if input_heads_layout and x.shape[-1] is not None:
        n_in = input_heads_layout[0] * x.shape[-1]
    # Backprop says which inputs need no gradient (e.g. the model input).
    skip = getattr(op, "skip_input_indices", None) or ()
    need_dx, need_dvalues = 0 not in skip, 1 not in skip
    if need_dx and n_in is None:
        raise ValueError(
            "BsmmForward gradient: x's number of columns (n_in) must be known statically"
        )
    if need_dx and not need_dvalues and not (heads_layout or input_heads_layout):
        dx = module.bsmm_input_grad(dy, values, rows, cols, block_size=block_size, n_in=n_in)
        return [dx, None, None, None]
    if not (need_dx or need_dvalues):
        return [None, None, None, None]
    dx, dvalues = module.bsmm_backward(
        x,
        [dy],
        values,
        rows,
        cols,
        block_size=block_size,
        compute_dx=need_dx,
        heads_layout=heads_layout,
        input_heads_layout=input_heads_layout,
    )
    return [dx if need_dx else None, dvalues if need_dvalues else None, None, None]


def _bsmm_layer_grad(op: Any, dy: tf.Tensor, _dz: tf.Tensor) -> list[tf.Tensor | None]:
    """dX, dValues and dBias of act(X . W + b) from one BsmmLayerBackward (the activation's
    gradient from the layer's output, or from its pre-activation z with GELU); none for
    rows/cols."""
    x, values, rows, cols, _ = op.inputs
    skip = getattr(op, "skip_input_indices", None) or ()
    need_dx = 0 not in skip
    activation = op.get_attr("activation")
    dx, dvalues, dbias = loaded_ops().bsmm_layer_backward(
        x,
        dy,
        op.outputs[1] if activation in (b"GELU", "GELU") else op.outputs[0],
        values,
        rows,
        cols,
        block_size=op.get_attr("block_size"),
        activation=activation,
        compute_dx=need_dx,
    )
    return [dx if need_dx else None, dvalues, None, None, dbias]


def _dropout_grad(op: Any, dy: tf.Tensor, _dmask: tf.Tensor) -> list[tf.Tensor | None]:
    """dx = dy * mask (the mask already holds the 1 / (1 - rate) scale); none for the state."""
    return [dy * op.outputs[1], None]


def dropout(x: Any, rate: float, generator: Any) -> tf.Tensor:
    """Inverted dropout in one native op: x * (u >= rate) / (1 - rate), u uniform in [0, 1).

    The numbers come from a counter-based hash keyed by `generator`'s state (a Philox
    `tf.random.Generator`), whose counter the op advances: reproducible from the seed, the same for
    any thread count, but not the stream of `generator.uniform`.
    """
    y, _ = loaded_ops().dynsparse_dropout(x, generator.state.handle, rate=float(rate))
    return y


def _scaled_softmax_grad(op: Any, dy: tf.Tensor) -> tf.Tensor:
    """dx = scale * y * (dy - sum(dy * y)) over the last axis, in one op."""
    return loaded_ops().dynsparse_scaled_softmax_grad(op.outputs[0], dy, scale=op.get_attr("scale"))


def scaled_softmax(x: Any, scale: float) -> tf.Tensor:
    """softmax(scale * x) over the last axis in one native op (scale > 0), its gradient in one
    more: what tf.nn.softmax(x * scale) computes in two ops forward and five backward, to within
    a few float roundings (an exp of Cephes' accuracy, sums in vector order)."""
    return loaded_ops().dynsparse_scaled_softmax(x, scale=float(scale))


def _group_norm_grad(
    op: Any, dy: tf.Tensor, _dmean: tf.Tensor, _drstd: tf.Tensor
) -> list[tf.Tensor]:
    """dx, dgamma, dbeta in one op, from the forward's per-example mean and 1/std."""
    x, gamma, _ = op.inputs
    _, mean, rstd = op.outputs
    dx, dgamma, dbeta = loaded_ops().dynsparse_group_norm_grad(dy, x, gamma, mean, rstd)
    return [dx, dgamma, dbeta]


def group_norm(x: Any, gamma: Any, beta: Any, epsilon: float) -> tf.Tensor:
    """GroupNorm with one group in one native op: per example (first axis) the mean and variance
    over all its other elements, then (x - mean) / sqrt(variance + epsilon) * gamma + beta, gamma
    and beta over the last axis; the gradient in one more op."""
    y, _, _ = loaded_ops().dynsparse_group_norm(x, gamma, beta, epsilon=float(epsilon))
    return y


def block_size_of(values: Any) -> int:
    """The block size from the static shape of values [nnz, bs, bs]."""
    shape = values.shape
    if len(shape) != 3 or shape[1] is None or shape[1] != shape[2]:
        raise ValueError(
            f"values must have a static shape [nnz, bs, bs] with square blocks, got {shape}"
        )
    return int(shape[1])


def _flatten_rows(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None]:
    """x [..., n] as [rows, n], plus the leading shape to restore (None for rank 2)."""
    import tensorflow as tf

    if x.shape.rank == 2:
        return x, None
    if x.shape.rank == 3:
        width = x.shape[-1] if x.shape[-1] is not None else tf.shape(x)[-1]
        return tf.reshape(x, [-1, width]), tf.shape(x)[:-1]
    raise ValueError(f"expected a rank 2 [batch, n] or rank 3 [b, t, n] tensor, got {x.shape}")


def bsmm(x: Any, values: Any, rows: Any, cols: Any, n_out: int) -> tf.Tensor:
    """y = x . W for x [batch, n_in] or [b, t, n_in]; gives [batch, n_out] or [b, t, n_out]."""
    import tensorflow as tf

    module = loaded_ops()
    x = tf.convert_to_tensor(x)
    x2, leading = _flatten_rows(x)
    y = module.bsmm_forward(x2, values, rows, cols, block_size=block_size_of(values), n_out=n_out)
    if leading is None:
        return y
    y = tf.reshape(y, tf.concat([leading, [n_out]], axis=0))
    return tf.ensure_shape(y, x.shape[:-1].concatenate([n_out]))


def bsmm_layer(
    x: Any, values: Any, rows: Any, cols: Any, bias: Any, activation: str = "none"
) -> tf.Tensor:
    """act(x . W + bias) in one native op (its gradient one op too), for x [batch, n_in] or
    [b, t, n_in]; `activation` one of LAYER_ACTIVATIONS. The same numbers as `bsmm`, then the bias
    add and TensorFlow's ReLU or exact GELU (tf.nn.gelu), with three ops fewer each way, and with
    GELU 14 more (its 5 forward ops and 9 in its gradient)."""
    import tensorflow as tf

    if activation not in LAYER_ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r} for a sparse layer; use one of "
            f"{sorted(LAYER_ACTIVATIONS)}"
        )
    module = loaded_ops()
    x = tf.convert_to_tensor(x)
    x2, leading = _flatten_rows(x)
    y, _ = module.bsmm_layer(
        x2,
        values,
        rows,
        cols,
        bias,
        block_size=block_size_of(values),
        activation=LAYER_ACTIVATIONS[activation],
    )
    if leading is None:
        return y
    n_out = y.shape[-1]
    y = tf.reshape(y, tf.concat([leading, [n_out if n_out is not None else tf.shape(y)[-1]]], 0))
    return tf.ensure_shape(y, x.shape[:-1].concatenate([n_out]))


def bsmm_heads(
    x: Any, values: Any, rows: Any, cols: Any, n_out: int, parts: int, heads: int
) -> list[tf.Tensor]:
    """y = x . W for x [b, tokens, n_in], as `parts` tensors [b, heads, tokens, head_size] with
    head_size = n_out / (parts * heads): an attention's Q, K, V (parts = 3) in the layout of its
    batched products, written so by the op (block size 1, 8 or 16; head_size a multiple of 8).
    The gradient reads their gradients as they come, in that layout and unstacked, with no
    transpose or stack in either direction; it always computes dX."""
    import tensorflow as tf

    module = loaded_ops()
    x = tf.convert_to_tensor(x)
    if x.shape.rank != 3 or x.shape[1] is None:
        raise ValueError(
            f"bsmm_heads needs x [batch, tokens, n_in] with known tokens, got {x.shape}"
        )
    layout = [parts, heads, int(x.shape[1])]
    block_size = block_size_of(values)

    @tf.custom_gradient
    def product(x2: tf.Tensor, values: tf.Tensor) -> Any:
        y = module.bsmm_forward(
            x2, values, rows, cols, block_size=block_size, n_out=n_out, heads_layout=layout
        )

        def gradient(*dys: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            dx, dvalues = module.bsmm_backward(
                x2, list(dys), values, rows, cols, block_size=block_size, heads_layout=layout
            )
            return dx, dvalues

        return tf.unstack(y), gradient

    x2 = tf.reshape(x, [-1, x.shape[-1] if x.shape[-1] is not None else tf.shape(x)[-1]])
    return product(x2, values)


def bsmm_from_heads(x: Any, values: Any, rows: Any, cols: Any, n_out: int) -> tf.Tensor:
    """y = x . W for x read as [b, heads, tokens, head_size] (an attention's output before its
    heads are merged: row (b, t), column (h, e)); gives [b, tokens, n_out], without the merging
    transpose either way (block size 1, 8 or 16; head_size a multiple of 8)."""
    import tensorflow as tf

    module = loaded_ops()
    x = tf.convert_to_tensor(x)
    if x.shape.rank != 4 or None in x.shape[1:]:
        raise ValueError(
            f"bsmm_from_heads needs x [batch, heads, tokens, head_size] with known heads, tokens "
            f"and head_size, got {x.shape}"
        )
    _, heads, tokens, _ = (int(d) if d is not None else None for d in x.shape)
    y = module.bsmm_forward(
        x,
        values,
        rows,
        cols,
        block_size=block_size_of(values),
        n_out=n_out,
        input_heads_layout=[heads, tokens],
    )
    return tf.reshape(y, [-1, tokens, n_out])


def bsmm_dense_grad(x: Any, dy: Any, block_size: int, pooling: str = "NONE") -> tf.Tensor:
    """|x^T . dy|: [n_in, n_out] for NONE, or [n_in/bs, n_out/bs] pooled (SUM, AVG, MAX).

    x [batch, n_in] and dy [batch, n_out], or both rank 3 [b, t, ...] (the rows are summed over).
    """
    import tensorflow as tf

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    module = loaded_ops()
    x2, _ = _flatten_rows(tf.convert_to_tensor(x))
    dy2, _ = _flatten_rows(tf.convert_to_tensor(dy))
    return module.bsmm_dense_grad(x2, dy2, block_size=block_size, pooling=pooling)


def dense_from_blocks(
    values: np.ndarray, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """The dense W [n_in, n_out] of a block-sparse weight (zeros outside the blocks)."""
    values = np.asarray(values)
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    n_in, n_out = shape
    bs = values.shape[1]
    if values.ndim != 3 or values.shape[2] != bs:
        raise ValueError(f"values must have shape [nnz, bs, bs], got {values.shape}")
    if n_in % bs or n_out % bs:
        raise ValueError(f"shape {shape} is not divisible by the block size {bs}")
    dense = np.zeros((n_in, n_out), dtype=values.dtype)
    # A [row block, col block, bs, bs] view of `dense`, so the assignment writes through.
    blocks = dense.reshape(n_in // bs, bs, n_out // bs, bs).transpose(0, 2, 1, 3)
    blocks[rows, cols] = values
    return dense
