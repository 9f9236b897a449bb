"""Self-test of the block-sparse matmul ops against dense TensorFlow references.

Every case returns a JSON-ready dict with its checks, their largest errors and pass/fail. The ops
must be loaded first (`dynsparse.ops.load_ops`). Used by the `selftest_ops` stage and by pytest
(tests/test_selftest.py), which runs the same cases one by one.

Tolerances (float32, u = 2**-24): an element passes when
    |ours - ref| <= 1e-6 + 1e-5 * |ref| + 2 * gamma_L * mag,    gamma_L = L*u / (1 - L*u)
where L is the reduction length (n_in for y, n_out for dx, the batch for the weight gradients) and
mag the same product on absolute values (|x| . |W| etc.). gamma_L * mag bounds the rounding error
of any summation order of a length-L dot product (Higham, Accuracy and Stability of Numerical
Algorithms, 3.1), so it holds for both our result and TensorFlow's; for small L it is below the
rtol term, for large L (e.g. 2048) it replaces an arbitrary looser rtol. Pooled gradients add the
rounding of the bs*bs pooling sum. Cases with +-1 values and +-1 inputs must match exactly: every
partial sum is an integer below 2**24.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from dynsparse import ops
from dynsparse.blocks import gather_blocks, pool, random_pattern
from dynsparse.layers import activate

UNIT_ROUNDOFF = {np.dtype(np.float32): 2.0**-24, np.dtype(np.float64): 2.0**-53}
RTOL = 1e-5
ATOL = 1e-6
# Central differences of a linear function are exact up to rounding (~eps / delta).
NUMERIC_GRADIENT_TOLERANCE = 1e-8

CaseResult = dict[str, Any]


@dataclass(frozen=True)
class MatmulCase:
    """One comparison of y, dx, dvalues and the four dense gradients with the dense reference."""

    name: str
    batch: tuple[int, ...]  # (M,) for x [M, n_in], (b, t) for x [b, t, n_in]
    n_in: int
    n_out: int
    block_size: int
    density: float = 0.1  # fraction of blocks; nnz = max(1, round(density * blocks))
    nnz: int | None = None  # overrides density
    pattern: str = "random"  # random | sign_ones | fixed
    seed: int = 1
    kind: ClassVar[str] = "matmul"

    def params(self) -> dict[str, Any]:
        params = asdict(self)
        params.pop("name")
        params["nnz"] = case_nnz(self) if self.pattern != "fixed" else None
        return params

    def run(self) -> dict[str, dict[str, Any]]:
        return run_matmul_case(self)


@dataclass(frozen=True)
class GradientCase:
    """Numeric (finite-difference) gradient check in float64."""

    name: str
    batch: int
    n_in: int
    n_out: int
    block_size: int
    nnz: int
    seed: int = 2
    kind: ClassVar[str] = "numeric_gradient"

    def params(self) -> dict[str, Any]:
        params = asdict(self)
        params.pop("name")
        return params

    def run(self) -> dict[str, dict[str, Any]]:
        return run_gradient_case(self)


@dataclass(frozen=True)
class ErrorCase:
    """A bad input that must raise `error` with `message` in its text."""

    name: str
    call: Callable[[], Any] = field(compare=False)
    message: str
    error: type[Exception] = tf.errors.InvalidArgumentError
    kind: ClassVar[str] = "error"

    def params(self) -> dict[str, Any]:
        return {"expected_error": self.error.__name__, "expected_message": self.message}

    def run(self) -> dict[str, dict[str, Any]]:
        return run_error_case(self)


@dataclass(frozen=True)
class CheckCase:
    """Any other check: a function returning (checks, details)."""

    name: str
    kind: str
    check: Callable[[], dict[str, dict[str, Any]]] = field(compare=False)

    def params(self) -> dict[str, Any]:
        return {}

    def run(self) -> dict[str, dict[str, Any]]:
        return self.check()


Case = MatmulCase | GradientCase | ErrorCase | CheckCase


# ---------------------------------------------------------------------------------------------
# Patterns and data


def random_blocks(
    rng: np.random.Generator, n_in: int, n_out: int, bs: int, nnz: int
) -> tuple[np.ndarray, np.ndarray]:
    """nnz distinct block coordinates in random order (the ops must not rely on any order)."""
    return random_pattern((n_in // bs, n_out // bs), nnz, rng, sort=False)


def fixed_blocks(n_in: int, n_out: int, bs: int) -> tuple[np.ndarray, np.ndarray]:
    """The original self-test's pattern: a cropped identity plus blocks (1, 3) and (0, 7)."""
    n_block_rows, n_block_cols = n_in // bs, n_out // bs
    mask = np.eye(max(n_block_rows, n_block_cols), dtype=bool)[:n_block_rows, :n_block_cols]
    mask[1, 3] = mask[0, 7] = True
    rows, cols = np.nonzero(mask)
    return rows.astype(np.int32), cols.astype(np.int32)


def case_nnz(case: MatmulCase) -> int:
    if case.nnz is not None:
        return case.nnz
    blocks = (case.n_in // case.block_size) * (case.n_out // case.block_size)
    return max(1, round(case.density * blocks))


def case_data(case: MatmulCase) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(case.seed)
    bs = case.block_size
    if case.pattern == "fixed":
        rows, cols = fixed_blocks(case.n_in, case.n_out, bs)
    else:
        rows, cols = random_blocks(rng, case.n_in, case.n_out, bs, case_nnz(case))
    nnz = len(rows)
    x_shape = (*case.batch, case.n_in)
    dy_shape = (*case.batch, case.n_out)
    if case.pattern == "sign_ones":
        values = rng.choice([-1.0, 1.0], size=(nnz, bs, bs))
        x = rng.choice([-1.0, 1.0], size=x_shape)
        dy = rng.choice([-1.0, 1.0], size=dy_shape)
    elif case.pattern == "fixed":
        values = rng.uniform(0.0, 1.0, size=(nnz, bs, bs))
        x = rng.uniform(0.0, 1.0, size=x_shape)
        dy = rng.standard_normal(dy_shape)
    else:
        values = rng.standard_normal((nnz, bs, bs))
        x = rng.standard_normal(x_shape)
        dy = rng.standard_normal(dy_shape)
    return {
        "values": values.astype(np.float32),
        "rows": rows,
        "cols": cols,
        "x": x.astype(np.float32),
        "dy": dy.astype(np.float32),
    }


# ---------------------------------------------------------------------------------------------
# Comparisons


def gamma(length: int, dtype: Any) -> float:
    nu = length * UNIT_ROUNDOFF[np.dtype(dtype)]
    return nu / (1.0 - nu)


def elementwise_tolerance(
    reference: np.ndarray, magnitude: np.ndarray, length: int, exact: bool
) -> np.ndarray:
    if exact:
        return np.zeros_like(reference, dtype=np.float64)
    relative: np.ndarray = RTOL * np.abs(reference.astype(np.float64))
    return ATOL + relative + 2.0 * gamma(length, np.float32) * magnitude.astype(np.float64)


def compare(ours: np.ndarray, reference: np.ndarray, tolerance: np.ndarray) -> dict[str, Any]:
    if ours.shape != reference.shape:
        return {
            "passed": False,
            "max_abs_error": float("inf"),
            "error_over_tolerance": float("inf"),
            "note": f"shape {ours.shape} != reference shape {reference.shape}",
        }
    error = np.abs(ours.astype(np.float64) - reference.astype(np.float64))
    finite = bool(np.all(np.isfinite(ours)))
    passed = finite and bool(np.all(error <= tolerance))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(error > 0, error / tolerance, 0.0)
    return {
        "passed": passed,
        "max_abs_error": float(error.max()) if error.size else 0.0,
        "error_over_tolerance": float(ratio.max()) if ratio.size else 0.0,
    }


def run_matmul_case(case: MatmulCase) -> dict[str, dict[str, Any]]:
    data = case_data(case)
    bs, n_in, n_out = case.block_size, case.n_in, case.n_out
    exact = case.pattern == "sign_ones"
    rows, cols = data["rows"], data["cols"]
    x, dy, values = tf.constant(data["x"]), tf.constant(data["dy"]), tf.constant(data["values"])
    dense_w = tf.constant(ops.dense_from_blocks(data["values"], rows, cols, (n_in, n_out)))

    with tf.GradientTape() as tape:
        tape.watch([x, values])
        y = ops.bsmm(x, values, rows, cols, n_out=n_out)
    dx, dvalues = tape.gradient(y, [x, values], output_gradients=dy)

    x2 = tf.reshape(x, [-1, n_in])
    dy2 = tf.reshape(dy, [-1, n_out])
    batch = int(x2.shape[0])
    with tf.GradientTape() as tape:
        tape.watch([x2, dense_w])
        y_ref = tf.matmul(x2, dense_w)
    dx_ref, dw_ref = (t.numpy() for t in tape.gradient(y_ref, [x2, dense_w], dy2))
    abs_w, abs_x, abs_dy = tf.abs(dense_w), tf.abs(x2), tf.abs(dy2)
    mag_y = tf.matmul(abs_x, abs_w).numpy()
    mag_dx = tf.matmul(abs_dy, abs_w, transpose_b=True).numpy()
    mag_dw = tf.matmul(abs_x, abs_dy, transpose_a=True).numpy()

    checks = {
        "y": compare(
            tf.reshape(y, [-1, n_out]).numpy(),
            y_ref.numpy(),
            elementwise_tolerance(y_ref.numpy(), mag_y, n_in, exact),
        ),
        "dx": compare(
            tf.reshape(dx, [-1, n_in]).numpy(),
            dx_ref,
            elementwise_tolerance(dx_ref, mag_dx, n_out, exact),
        ),
    }
    dvalues_ref = gather_blocks(dw_ref, rows, cols, bs)
    checks["dvalues"] = compare(
        dvalues.numpy(),
        dvalues_ref,
        elementwise_tolerance(dvalues_ref, gather_blocks(mag_dw, rows, cols, bs), batch, exact),
    )
    grad_tolerance = elementwise_tolerance(dw_ref, mag_dw, batch, exact)
    abs_grad_ref = np.abs(dw_ref.astype(np.float64))
    for pooling in ops.POOLINGS:
        ours = ops.bsmm_dense_grad(x, dy, block_size=bs, pooling=pooling).numpy()
        reference = pool(abs_grad_ref, bs, pooling)
        if pooling == "MAX":
            tolerance = pool(grad_tolerance, bs, "MAX")
        else:
            tolerance = pool(grad_tolerance, bs, pooling)
            if not exact:
                tolerance = tolerance + gamma(bs * bs, np.float32) * reference
        checks[f"dense_grad_{pooling}"] = compare(ours, reference, tolerance)
    return checks


def run_gradient_case(case: GradientCase) -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(case.seed)
    bs = case.block_size
    rows, cols = random_blocks(rng, case.n_in, case.n_out, bs, case.nnz)
    x = tf.constant(rng.standard_normal((case.batch, case.n_in)))
    values = tf.constant(rng.standard_normal((case.nnz, bs, bs)))

    def forward(x: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
        return ops.bsmm(x, values, rows, cols, n_out=case.n_out)

    theoretical, numerical = tf.test.compute_gradient(forward, [x, values])
    checks = {}
    for name, theo, num in zip(("dx", "dvalues"), theoretical, numerical, strict=True):
        error = float(np.abs(theo - num).max())
        checks[name] = {
            "passed": error <= NUMERIC_GRADIENT_TOLERANCE,
            "max_abs_error": error,
            "error_over_tolerance": error / NUMERIC_GRADIENT_TOLERANCE,
        }
    return checks


def _raised(passed: bool, message: str, expected: str | None = None) -> dict[str, dict[str, Any]]:
    check: dict[str, Any] = {
        "passed": passed,
        "max_abs_error": 0.0,
        "error_over_tolerance": 0.0,
        "message": message,
    }
    if expected is not None:
        check["expected"] = expected
    return {"raised": check}


def run_error_case(case: ErrorCase) -> dict[str, dict[str, Any]]:
    expected = f"{case.error.__name__}: {case.message}"
    try:
        case.call()
    except case.error as error:
        text = str(error)
        found = case.message in text
        first_line = text.splitlines()[0][:400] if text else ""
        return _raised(found, first_line, None if found else case.message)
    except Exception as error:  # reported as a failed case
        return _raised(False, f"{type(error).__name__}: {str(error)[:400]}", expected)
    return _raised(False, "no error raised", expected)


# ---------------------------------------------------------------------------------------------
# Other checks


def pattern_update_checks() -> dict[str, dict[str, Any]]:
    """A pattern changed in place between two calls of one traced function: new result, 1 trace."""
    rng = np.random.default_rng(7)
    n_in, n_out, bs, nnz = 64, 48, 4, 20
    rows, cols = random_blocks(rng, n_in, n_out, bs, nnz)
    values_v = tf.Variable(rng.standard_normal((nnz, bs, bs)).astype(np.float32))
    rows_v, cols_v = tf.Variable(rows), tf.Variable(cols)
    x = tf.constant(rng.standard_normal((5, n_in)).astype(np.float32))

    @tf.function
    def step(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            y = ops.bsmm(x, values_v, rows_v, cols_v, n_out=n_out)
            loss = tf.reduce_sum(y * y)
        return y, tape.gradient(loss, values_v)

    checks: dict[str, dict[str, Any]] = {}
    previous = None
    for call in range(3):
        y, dvalues = step(x)
        w = ops.dense_from_blocks(values_v.numpy(), rows_v.numpy(), cols_v.numpy(), (n_in, n_out))
        y_ref = x.numpy().astype(np.float64) @ w
        mag = np.abs(x.numpy()) @ np.abs(w)
        checks[f"y_call{call}"] = compare(
            y.numpy(), y_ref, elementwise_tolerance(y_ref, mag, n_in, False)
        )
        # The gradient of sum(y * y) is x^T . (2 y) at the blocks, with our y as dy.
        dy = 2.0 * y.numpy()
        dw_ref = x.numpy().T.astype(np.float64) @ dy.astype(np.float64)
        dw_mag = np.abs(x.numpy()).T @ np.abs(dy)
        rows_now, cols_now = rows_v.numpy(), cols_v.numpy()
        dvalues_ref = gather_blocks(dw_ref, rows_now, cols_now, bs)
        checks[f"dvalues_call{call}"] = compare(
            dvalues.numpy(),
            dvalues_ref,
            elementwise_tolerance(
                dvalues_ref, gather_blocks(dw_mag, rows_now, cols_now, bs), x.shape[0], False
            ),
        )
        if previous is not None:
            changed = not np.array_equal(previous, y.numpy())
            checks[f"changed_call{call}"] = {
                "passed": changed,
                "max_abs_error": 0.0,
                "error_over_tolerance": 0.0,
            }
        previous = y.numpy()
        if call == 0:
            new_rows, new_cols = random_blocks(rng, n_in, n_out, bs, nnz)
            rows_v.assign(new_rows)  # new positions, same values
            cols_v.assign(new_cols)
        else:
            values_v.assign(rng.standard_normal((nnz, bs, bs)).astype(np.float32))
    traces = int(step.experimental_get_tracing_count())
    checks["trace_count"] = {
        "passed": traces == 1,
        "max_abs_error": 0.0,
        "error_over_tolerance": 0.0,
        "traces": traces,
    }
    return checks


def determinism_checks(batch: int, n_in: int, n_out: int, bs: int) -> dict[str, dict[str, Any]]:
    """Bitwise equal results over repeated calls (work units own their outputs)."""
    case = MatmulCase("determinism", (batch,), n_in, n_out, bs, density=0.1, seed=11)
    data = case_data(case)
    rows, cols = data["rows"], data["cols"]
    x, dy, values = (tf.constant(data[k]) for k in ("x", "dy", "values"))

    def results() -> list[np.ndarray]:
        with tf.GradientTape() as tape:
            tape.watch([x, values])
            y = ops.bsmm(x, values, rows, cols, n_out=n_out)
        dx, dvalues = tape.gradient(y, [x, values], output_gradients=dy)
        grad = ops.bsmm_dense_grad(x, dy, block_size=bs, pooling="SUM")
        return [t.numpy() for t in (y, dx, dvalues, grad)]

    first = results()
    same = [True] * len(first)
    for _ in range(3):
        for i, again in enumerate(results()):
            same[i] = same[i] and np.array_equal(again, first[i])
    return {
        name: {"passed": ok, "max_abs_error": 0.0, "error_over_tolerance": 0.0}
        for name, ok in zip(("y", "dx", "dvalues", "dense_grad_SUM"), same, strict=True)
    }


def heads_layout_checks(bs: int) -> dict[str, dict[str, Any]]:
    """The heads layout ([3, B, heads, T, d], attr heads_layout) against the row-major output
    transposed, and the gradient from dY in that layout against dY transposed: bitwise equal."""
    batch, tokens, n_in, heads, head_size = 3, 28, 32, 4, 16
    n_out = 3 * heads * head_size
    case = MatmulCase("heads", (batch * tokens,), n_in, n_out, bs, density=0.3, seed=12)
    data = case_data(case)
    rows, cols = data["rows"], data["cols"]
    x = tf.constant(data["x"].reshape(batch, tokens, n_in))
    values = tf.constant(data["values"])
    dy_heads = tf.constant(
        np.random.default_rng(13)
        .standard_normal((3, batch, heads, tokens, head_size))
        .astype(data["x"].dtype)
    )

    def to_heads(y: tf.Tensor) -> tf.Tensor:
        return tf.transpose(tf.reshape(y, [batch, tokens, 3, heads, head_size]), [2, 0, 3, 1, 4])

    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, values])
        transposed = to_heads(ops.bsmm(x, values, rows, cols, n_out=n_out))
        written = tf.stack(ops.bsmm_heads(x, values, rows, cols, n_out=n_out, parts=3, heads=heads))
        # The op alone: one stacked output, its registered gradient reading one stacked dY.
        stacked = ops.loaded_ops().bsmm_forward(
            tf.reshape(x, [batch * tokens, n_in]), values, rows, cols, block_size=bs,
            n_out=n_out, heads_layout=[3, heads, tokens],
        )  # fmt: skip
    expected = [transposed, *tape.gradient(transposed, [x, values], output_gradients=dy_heads)]
    got = [written, *tape.gradient(written, [x, values], output_gradients=dy_heads)]
    expected += expected
    got += [stacked, *tape.gradient(stacked, [x, values], output_gradients=dy_heads)]
    # The input side: x read as [B, heads, T, d] (attr input_heads_layout) against the merged rows.
    out_case = MatmulCase(
        "heads_input", (batch * tokens,), heads * head_size, n_in, bs, density=0.3, seed=14
    )
    out_data = case_data(out_case)
    out_rows, out_cols = out_data["rows"], out_data["cols"]
    out_values = tf.constant(out_data["values"])
    x_heads = tf.constant(
        out_data["x"].reshape(batch, tokens, heads, head_size).transpose(0, 2, 1, 3).copy()
    )
    dy_rows = tf.constant(out_data["dy"].reshape(batch, tokens, n_in))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x_heads, out_values])
        merged = tf.reshape(tf.transpose(x_heads, [0, 2, 1, 3]), [batch, tokens, heads * head_size])
        from_rows = ops.bsmm(merged, out_values, out_rows, out_cols, n_out=n_in)
        from_heads = ops.bsmm_from_heads(x_heads, out_values, out_rows, out_cols, n_out=n_in)
    sources = [x_heads, out_values]
    expected += [from_rows, *tape.gradient(from_rows, sources, output_gradients=dy_rows)]
    got += [from_heads, *tape.gradient(from_heads, sources, output_gradients=dy_rows)]
    checks = {}
    names = (
        *("y", "dx", "dvalues"),
        *("stacked_y", "stacked_dx", "stacked_dvalues"),
        *("input_y", "input_dx", "input_dvalues"),
    )
    for name, a, b in zip(names, got, expected, strict=True):
        error = float(np.max(np.abs(a.numpy() - b.numpy())))
        checks[name] = {
            "passed": bool(np.array_equal(a.numpy(), b.numpy())),
            "max_abs_error": error,
            "error_over_tolerance": 0.0 if error == 0 else float("inf"),
        }
    return checks


# Rows of the attention (28), of one vector and a part (7, 16, 33 with AVX-512's 16 lanes and
# AVX2's 8), longer than the rows held in registers (70), and rows of one element.
SOFTMAX_SHAPES = ((2, 3, 28, 28), (5, 7), (6, 16), (9, 33), (3, 70), (4, 1))
# exp within 2 ulp, a sum of at most 70 terms, a division and a multiply, each rounded once.
SOFTMAX_RTOL = 2e-6


def softmax_checks() -> dict[str, dict[str, Any]]:
    """DynsparseScaledSoftmax and its registered gradient against tf.nn.softmax in float64, for
    scores up to +-40 before the scale (exps down to the underflow) and -inf entries."""
    checks = {}
    scale = 1.0 / np.sqrt(32.0)
    for shape in SOFTMAX_SHAPES:
        rng = np.random.default_rng(shape[-1])
        x = (rng.standard_normal(shape) * 10.0).astype(np.float32)
        x.reshape(-1, shape[-1])[::3, 0] = 40.0 * np.sign(x.reshape(-1, shape[-1])[::3, 0])
        if shape[-1] > 1:
            x.reshape(-1, shape[-1])[1::4, -1] = -np.inf
        dy = rng.standard_normal(shape).astype(np.float32)
        x_t, dy_t = tf.constant(x), tf.constant(dy)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x_t)
            y = ops.scaled_softmax(x_t, scale)
            reference = tf.nn.softmax(tf.cast(x_t, tf.float64) * scale, axis=-1)
        dx = tape.gradient(y, x_t, output_gradients=dy_t)
        dx_reference = tape.gradient(reference, x_t, output_gradients=tf.cast(dy_t, tf.float64))
        n = shape[-1]
        y_ref = reference.numpy()
        # dx = scale * y * (dy - <dy, y>): relative to the magnitudes that meet in it.
        magnitude = scale * y_ref * (np.abs(dy) + np.sum(np.abs(dy) * y_ref, -1, keepdims=True))
        label = "x".join(map(str, shape))
        checks[f"y_{label}"] = compare(y.numpy(), y_ref, SOFTMAX_RTOL * y_ref + 1e-30)
        checks[f"dx_{label}"] = compare(
            dx.numpy(), dx_reference.numpy(), ATOL * 1e-3 + 4 * gamma(n + 4, np.float32) * magnitude
        )
    return checks


# The transformer's activations and its positional table, odd widths, and more axes.
GROUP_NORM_SHAPES = ((32, 28, 96), (28, 28), (3, 5), (2, 3, 4, 7))


def reference_group_norm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor) -> tf.Tensor:
    """GroupNorm1 in TensorFlow's ops (as models.py had it before the native op)."""
    mean, variance = tf.nn.moments(x, axes=list(range(1, x.shape.rank)), keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + 1e-6) * gamma + beta


def group_norm_magnitudes(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, dy: np.ndarray
) -> list[np.ndarray]:
    """The sums of absolute terms behind y, dx, dgamma and dbeta (their rounding scales)."""
    rows = x.astype(np.float64).reshape(x.shape[0], -1)
    mean = rows.mean(1, keepdims=True)
    rstd = 1.0 / np.sqrt(rows.var(1, keepdims=True) + 1e-6)
    xhat = ((rows - mean) * rstd).reshape(x.shape)
    g = np.abs(dy * gamma).reshape(rows.shape)
    gx = (g * np.abs(xhat).reshape(rows.shape)).mean(1, keepdims=True)
    dx = rstd * (g + g.mean(1, keepdims=True) + np.abs(xhat).reshape(rows.shape) * gx)
    features = tuple(range(x.ndim - 1))
    return [
        np.abs(xhat * gamma) + np.abs(beta),
        dx.reshape(x.shape),
        np.sum(np.abs(dy * xhat), axis=features),
        np.sum(np.abs(dy), axis=features),
    ]


def group_norm_checks() -> dict[str, dict[str, Any]]:
    """DynsparseGroupNorm and its registered gradient (dx, dgamma, dbeta) against TensorFlow's
    ops in float64, within the rounding of sums over an example's elements."""
    checks = {}
    for shape in GROUP_NORM_SHAPES:
        rng = np.random.default_rng(sum(shape))
        x = (rng.standard_normal(shape) * 3.0 + 1.0).astype(np.float32)
        gamma = rng.standard_normal(shape[-1]).astype(np.float32)
        beta = rng.standard_normal(shape[-1]).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        ours_in = [tf.constant(a) for a in (x, gamma, beta)]
        reference_in = [tf.constant(a.astype(np.float64)) for a in (x, gamma, beta)]
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(ours_in + reference_in)
            y = ops.group_norm(ours_in[0], ours_in[1], ours_in[2], 1e-6)
            reference = reference_group_norm(reference_in[0], reference_in[1], reference_in[2])
        got = [y, *tape.gradient(y, ours_in, output_gradients=tf.constant(dy))]
        expected = [
            reference,
            *tape.gradient(reference, reference_in, output_gradients=tf.constant(dy, tf.float64)),
        ]
        magnitudes = group_norm_magnitudes(x, gamma, beta, dy)
        m = int(np.prod(shape[1:]))
        label = "x".join(map(str, shape))
        outputs = zip(("y", "dx", "dgamma", "dbeta"), got, expected, magnitudes, strict=True)
        for name, ours, exact, magnitude in outputs:
            tolerance = elementwise_tolerance(exact.numpy(), magnitude, 2 * m, exact=False)
            checks[f"{name}_{label}"] = compare(ours.numpy(), exact.numpy(), tolerance)
    return checks


def layer_checks(
    batch: tuple[int, ...], n_in: int, n_out: int, bs: int, activation: str
) -> dict[str, dict[str, Any]]:
    """The fused layer (`BsmmLayer`, act(x·W + b), and its one-op gradient) against the same
    layer unfused (BsmmForward, TensorFlow's bias add and ReLU or exact GELU, their gradients):
    bitwise equal, the bias gradient too (it sums dZ's rows in TensorFlow's order). ReLU zeroes
    about half of the outputs, so the activation's gradient is exercised; the GELU cases' inputs
    reach every branch of Eigen's erfc (|z| / √2 under 1, from 1 to 11, clamped beyond)."""
    rows_count = int(np.prod(batch))
    case = MatmulCase("layer", (rows_count,), n_in, n_out, bs, density=0.3, seed=15)
    data = case_data(case)
    rows, cols = data["rows"], data["cols"]
    x = tf.constant(data["x"].reshape(*batch, n_in))
    values = tf.constant(data["values"])
    bias = tf.constant(np.random.default_rng(16).standard_normal(n_out).astype(data["x"].dtype))
    dy = tf.constant(data["dy"].reshape(*batch, n_out))

    # In a tf.function, as training runs it: Grappler rounds GELU's gradient otherwise than eager
    # execution (gelu_elements.h).
    @tf.function
    def both() -> tuple[list[Any], list[Any]]:
        sources = [x, values, bias]
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(sources)
            fused = ops.bsmm_layer(x, values, rows, cols, bias, activation)
            unfused = activate(ops.bsmm(x, values, rows, cols, n_out=n_out) + bias, activation)
        return (
            [fused, *tape.gradient(fused, sources, output_gradients=dy)],
            [unfused, *tape.gradient(unfused, sources, output_gradients=dy)],
        )

    got, expected = both()
    checks = {}
    for name, a, b in zip(("y", "dx", "dvalues", "dbias"), got, expected, strict=True):
        error = float(np.max(np.abs(a.numpy() - b.numpy()), initial=0.0))
        checks[name] = {
            "passed": bool(np.array_equal(a.numpy(), b.numpy())),
            "max_abs_error": error,
            "error_over_tolerance": 0.0 if error == 0 else float("inf"),
        }
    return checks


LAYER_CASES = {
    # name: (batch, n_in, n_out, block size, activation)
    "layer_fc1_relu": ((16,), 784, 320, 1, "relu"),
    "layer_fc2": ((16,), 320, 10, 1, "none"),  # bias columns past the last packet of 8
    "layer_bs16_relu": ((16,), 128, 64, 16, "relu"),
    "layer_odd_rows_relu": ((19,), 24, 40, 8, "relu"),  # rows past the last multiple of 4
    "layer_few_rows": ((7,), 32, 12, 4, "relu"),  # under 16 rows: summed in row order
    "layer_tokens": ((4, 28), 96, 192, 8, "none"),  # rank 3, as the transformer's layers
    "layer_ffn1_gelu": ((4, 28), 96, 48, 1, "gelu"),  # the transformer's first feed-forward layer
    "layer_bs8_gelu": ((4, 28), 96, 48, 8, "gelu"),
    "layer_tail_gelu": ((3,), 24, 13, 1, "gelu"),  # 39 outputs: the last 7 in Eigen's scalar path
}


# ---------------------------------------------------------------------------------------------
# Error cases


def _i32(*values: int) -> np.ndarray:
    return np.array(values, np.int32)


def _ones(*shape: int) -> np.ndarray:
    return np.ones(shape, np.float32)


# The defaults every error row changes one thing of: x [2, 16], two 4x4 blocks at (0,0), (1,0).
_X, _VALUES, _ROWS, _COLS, _DY = _ones(2, 16), _ones(2, 4, 4), _i32(0, 1), _i32(0, 0), _ones(2, 8)
_BIAS = _ones(8)


def _forward(
    x: Any = _X, values: Any = _VALUES, rows: Any = _ROWS, cols: Any = _COLS, **attrs: int
) -> Any:
    attrs = {"block_size": 4, "n_out": 8, **attrs}
    return ops.loaded_ops().bsmm_forward(x, values, rows, cols, **attrs)


@tf.function
def _traced_forward(**changes: Any) -> Any:
    return _forward(**changes)


def _input_grad(dy: Any = _DY, rows: Any = _ROWS, cols: Any = _COLS, n_in: int = 16) -> Any:
    return ops.loaded_ops().bsmm_input_grad(dy, _VALUES, rows, cols, block_size=4, n_in=n_in)


def _values_grad(x: Any = _X, dy: Any = _DY, cols: Any = _COLS) -> Any:
    return ops.loaded_ops().bsmm_values_grad(x, dy, _ROWS, cols, block_size=4)


def _dense_grad(x: Any = _X, dy: Any = _DY, block_size: int = 4, pooling: str = "SUM") -> Any:
    return ops.loaded_ops().bsmm_dense_grad(x, dy, block_size=block_size, pooling=pooling)


def _backward(
    dy: Any = _DY, heads_layout: tuple[int, ...] = (), block_size: int = 4, **changes: Any
) -> Any:
    inputs = {"x": _X, "values": _VALUES, "rows": _ROWS, "cols": _COLS, **changes}
    return ops.loaded_ops().bsmm_backward(
        inputs["x"], [dy], inputs["values"], inputs["rows"], inputs["cols"],
        block_size=block_size, heads_layout=list(heads_layout),
    )  # fmt: skip


def _layer(bias: Any = _BIAS, block_size: int = 4, **changes: Any) -> Any:
    inputs = {"x": _X, "values": _VALUES, "rows": _ROWS, "cols": _COLS, **changes}
    return ops.loaded_ops().bsmm_layer(
        inputs["x"], inputs["values"], inputs["rows"], inputs["cols"], bias,
        block_size=block_size, activation="RELU",
    )  # fmt: skip


def _layer_backward(y: Any = _DY, block_size: int = 4, **changes: Any) -> Any:
    inputs = {"x": _X, "dy": _DY, "values": _VALUES, "rows": _ROWS, "cols": _COLS, **changes}
    return ops.loaded_ops().bsmm_layer_backward(
        inputs["x"], inputs["dy"], y, inputs["values"], inputs["rows"], inputs["cols"],
        block_size=block_size, activation="RELU",
    )  # fmt: skip


def _softmax(scale: float = 0.0) -> Any:
    return ops.scaled_softmax(_ones(2, 3), scale)


def _group_norm(x: Any = None, gamma: Any = None, epsilon: float = 1e-6) -> Any:
    x = _ones(2, 3) if x is None else x
    gamma = _ones(3) if gamma is None else gamma
    return ops.group_norm(x, gamma, gamma, epsilon)


_ERROR_CALLS: dict[str, Callable[..., Any]] = {
    "softmax": _softmax,
    "group_norm": _group_norm,
    "layer": _layer,
    "layer_backward": _layer_backward,
    "forward": _forward,
    "traced_forward": _traced_forward,
    "input_grad": _input_grad,
    "values_grad": _values_grad,
    "dense_grad": _dense_grad,
    "backward": _backward,
}
_INVALID = tf.errors.InvalidArgumentError
# (name, op, what differs from the defaults, expected message, expected error)
ERROR_ROWS: tuple[tuple[str, str, dict[str, Any], str, type[Exception]], ...] = (
    ("error_softmax_scale", "softmax", {"scale": 0.0},
     "DynsparseScaledSoftmax: scale must be a finite number > 0, got 0", _INVALID),
    ("error_group_norm_gamma", "group_norm", {"gamma": _ones(4)},
     "DynsparseGroupNorm: gamma and beta must be [3] (x's last axis), got [4] and [4]", _INVALID),
    ("error_group_norm_rank", "group_norm", {"x": _ones(3)},
     "x must be [examples, ..., features] (rank >= 2)", _INVALID),
    ("error_group_norm_epsilon", "group_norm", {"epsilon": 0.0},
     "DynsparseGroupNorm: epsilon must be > 0, got 0", _INVALID),
    ("error_block_size_3", "forward", {"values": _ones(2, 3, 3), "block_size": 3, "n_out": 9},
     "block_size must be one of 1, 4, 8, 16, got 3", _INVALID),
    ("error_block_size_in_graph", "traced_forward",
     {"values": _ones(2, 3, 3), "block_size": 3, "n_out": 9},
     "block_size must be one of 1, 4, 8, 16, got 3", ValueError),
    ("error_rows_out_of_range", "forward", {"rows": _i32(0, 4)},
     "rows[1] = 4 is out of range [0, 4)", _INVALID),
    ("error_rows_negative", "forward", {"rows": _i32(-1, 0)},
     "rows[0] = -1 is out of range [0, 4)", _INVALID),
    ("error_cols_out_of_range", "forward", {"cols": _i32(0, 2)},
     "cols[1] = 2 is out of range [0, 2)", _INVALID),
    ("error_duplicate_block", "forward",
     {"values": _ones(3, 4, 4), "rows": _i32(1, 0, 1), "cols": _i32(1, 0, 1)},
     "duplicate block (row 1, col 1) at positions 0 and 2", _INVALID),
    ("error_too_many_blocks", "forward",
     {"x": _ones(2, 4), "rows": _i32(0, 0), "cols": _i32(0, 0), "n_out": 4},
     "2 blocks do not fit in a 1 x 1 block grid", _INVALID),
    ("error_values_vs_rows", "forward", {"values": _ones(3, 4, 4)},
     "values has 3 blocks but rows and cols have 2 entries", _INVALID),
    ("error_rows_vs_cols", "forward", {"cols": _i32(0, 0, 1)},
     "rows and cols must have one entry per block, got rows of length 2 and cols of length 3",
     _INVALID),
    ("error_values_block_shape", "forward", {"values": _ones(2, 8, 8)},
     "values must have shape [nnz, block_size, block_size] = [nnz, 4, 4]", _INVALID),
    ("error_n_in_not_divisible", "forward", {"x": _ones(2, 18)},
     "n_in (x.shape[1]) = 18 is not divisible by block_size 4", _INVALID),
    ("error_n_out_not_divisible", "forward", {"n_out": 10},
     "n_out = 10 is not divisible by block_size 4", _INVALID),
    ("error_x_rank", "forward", {"x": _ones(16)}, "x must have rank 2", _INVALID),
    ("error_layer_bias_rank", "layer", {"bias": _ones(1, 8)}, "BsmmLayer: bias must have rank 1",
     _INVALID),
    ("error_layer_bias_width", "layer", {"bias": _ones(10)},
     "n_out (bias.shape[0]) = 10 is not divisible by block_size 4", _INVALID),
    ("error_layer_backward_y", "layer_backward", {"y": _ones(2, 4)},
     "dy [2,8] and y [2,4] must have the same shape", _INVALID),
    ("error_input_grad_duplicate", "input_grad", {"rows": _i32(1, 1)},
     "BsmmInputGrad: duplicate block (row 1, col 0)", _INVALID),
    ("error_input_grad_width", "input_grad", {"dy": _ones(2, 6)},
     "n_out (dy.shape[1]) = 6 is not divisible by block_size 4", _INVALID),
    ("error_input_grad_n_in", "input_grad", {"rows": _i32(0, 1), "n_in": 4},
     "rows[1] = 1 is out of range [0, 1)", _INVALID),
    ("error_values_grad_batch", "values_grad", {"x": _ones(3, 16)},
     "x and dy must have the same number of rows (batch)", _INVALID),
    ("error_values_grad_cols", "values_grad", {"cols": _i32(0, 5)},
     "BsmmValuesGrad: cols[1] = 5 is out of range [0, 2)", _INVALID),
    ("error_dense_grad_batch", "dense_grad", {"x": _ones(3, 16)},
     "x and dy must have the same number of rows (batch)", _INVALID),
    ("error_dense_grad_width", "dense_grad", {"dy": _ones(2, 6)},
     "n_out (dy.shape[1]) = 6 is not divisible by block_size 4", _INVALID),
    ("error_dense_grad_block_size", "dense_grad", {"block_size": 2},
     "block_size must be one of 1, 4, 8, 16, got 2", _INVALID),
    ("error_dense_grad_pooling", "dense_grad", {"pooling": "MEAN"}, "pooling", _INVALID),
    ("error_backward_batch", "backward", {"x": _ones(3, 16)},
     "x and dy must have the same number of rows (batch)", _INVALID),
    ("error_heads_block_size_4", "forward", {"heads_layout": [1, 1, 2]},
     "block size 1, 8 or 16", _INVALID),
    ("error_heads_uneven", "forward",
     {"values": _ones(2, 1, 1), "block_size": 1, "n_out": 28, "heads_layout": [3, 2, 2]},
     "n_out = 28 does not split into parts x heads = 6 heads", _INVALID),
    ("error_heads_head_size", "forward",
     {"values": _ones(2, 1, 1), "block_size": 1, "n_out": 12, "heads_layout": [3, 1, 2]},
     "head size (4) that is a multiple of 8", _INVALID),
    ("error_heads_rows", "forward",
     {"x": _ones(3, 16), "values": _ones(2, 1, 1), "block_size": 1, "n_out": 8,
      "heads_layout": [1, 1, 2]},
     "3 rows are not whole sequences of 2 tokens", _INVALID),
    ("error_heads_dy_shape", "backward",
     {"values": _ones(2, 1, 1), "block_size": 1, "heads_layout": (1, 1, 2),
      "dy": _ones(1, 1, 1, 3, 8)},
     "is not [parts, batch, heads, tokens, head_size], nor `parts` tensors", _INVALID),
    ("error_input_heads_block_size_4", "forward",
     {"x": _ones(1, 2, 2, 8), "input_heads_layout": [2, 2]}, "block size 1, 8 or 16, got 4",
     _INVALID),
    ("error_input_heads_shape", "forward",
     {"x": _ones(1, 3, 2, 8), "values": _ones(2, 1, 1), "block_size": 1,
      "input_heads_layout": [2, 2]},
     "is not [batch, heads, tokens, head_size] for input_heads_layout [2, 2]", _INVALID),
    ("error_input_heads_head_size", "forward",
     {"x": _ones(1, 2, 2, 4), "values": _ones(2, 1, 1), "block_size": 1,
      "input_heads_layout": [2, 2]},
     "a head size (x.shape[3] = 4) that is a multiple of 8", _INVALID),
)  # fmt: skip


def error_cases() -> list[ErrorCase]:
    return [
        ErrorCase(name, partial(_ERROR_CALLS[op], **changes), message, error)
        for name, op, changes, message, error in ERROR_ROWS
    ]


# ---------------------------------------------------------------------------------------------
# Case lists


def matmul_cases(quick: bool) -> list[MatmulCase]:
    cases: list[MatmulCase] = []
    tiny = {1: (16, 8), 4: (16, 8), 8: (16, 8), 16: (32, 16)}
    for bs in ops.BLOCK_SIZES:
        n_in, n_out = tiny[bs]
        cases += [
            MatmulCase(f"tiny_bs{bs}", (2,), n_in, n_out, bs, density=0.3),
            MatmulCase(f"single_block_bs{bs}", (3,), 4 * bs, 2 * bs, bs, nnz=1),
            MatmulCase(f"fixed_pattern_bs{bs}", (3,), 3 * bs, 8 * bs, bs, pattern="fixed"),
            MatmulCase(f"sign_ones_bs{bs}", (33,), 256, 128, bs, density=0.2, pattern="sign_ones"),
            MatmulCase(f"mnist_fc1_bs{bs}", (16,), 784, 320, bs, density=0.1),
            MatmulCase(f"transformer_ffn_in_bs{bs}", (4, 28), 96, 1536, bs, density=0.1),
            MatmulCase(f"transformer_head_pad_bs{bs}", (4, 28), 96, 16, bs, density=0.5),
        ]
        odd = {1: ((7,), 13, 29), 4: ((5,), 36, 20), 8: ((1,), 24, 40), 16: ((9,), 48, 80)}
        batch, n_in, n_out = odd[bs]
        cases.append(MatmulCase(f"odd_bs{bs}", batch, n_in, n_out, bs, density=0.4))
        if bs <= 4:
            cases.append(MatmulCase(f"transformer_embed_bs{bs}", (4, 28), 28, 96, bs, density=0.3))
        else:
            cases.append(MatmulCase(f"transformer_embed_pad_bs{bs}", (4, 28), 32, 96, bs, 0.3))
        if not quick:
            for density in (0.05, 0.3, 0.5, 1.0):
                cases.append(
                    MatmulCase(f"density{density}_bs{bs}", (33,), 128, 96, bs, density=density)
                )
            cases += [
                MatmulCase(f"transformer_ffn_out_bs{bs}", (4, 28), 1536, 96, bs, density=0.1),
                MatmulCase(f"transformer_qkv_bs{bs}", (4, 28), 96, 512, bs, density=0.1),
                MatmulCase(f"transformer_attn_out_bs{bs}", (4, 28), 512, 96, bs, density=0.1),
                MatmulCase(f"transformer_ff1_bs{bs}", (4, 28), 96, 48, bs, density=0.5),
                MatmulCase(f"transformer_ff2_bs{bs}", (4, 28), 48, 96, bs, density=0.5),
                MatmulCase(f"large_bs{bs}", (256,), 2048, 2048, bs, density=0.1),
            ]
    cases += [
        MatmulCase("mnist_fc2_bs1", (16,), 320, 10, 1, density=0.3),
        MatmulCase("transformer_head_bs1", (4, 28), 96, 10, 1, density=0.5),
    ]
    if quick:
        cases += [
            MatmulCase("density1.0_bs16", (20,), 64, 64, 16, density=1.0),
            MatmulCase("large_bs16", (256,), 2048, 2048, 16, density=0.1),
        ]
    else:
        cases += [
            MatmulCase("large_d0.3_bs16", (256,), 2048, 2048, 16, density=0.3),
            MatmulCase("sign_ones_large_bs16", (64,), 1024, 1536, 16, pattern="sign_ones"),
            MatmulCase("sign_ones_large_bs1", (64,), 1024, 1536, 1, pattern="sign_ones"),
        ]
    return cases


def gradient_cases(quick: bool) -> list[GradientCase]:
    cases = [
        GradientCase("numeric_gradient_bs1", 3, 12, 10, 1, nnz=30),
        GradientCase("numeric_gradient_bs4", 3, 16, 12, 4, nnz=5),
        GradientCase("numeric_gradient_bs8", 2, 16, 24, 8, nnz=3),
        GradientCase("numeric_gradient_bs16", 2, 32, 32, 16, nnz=2),
    ]
    return cases[::2] if quick else cases


def all_cases(quick: bool) -> list[Case]:
    cases: list[Case] = [*matmul_cases(quick), *gradient_cases(quick)]
    cases.append(CheckCase("pattern_update_in_place", "pattern_update", pattern_update_checks))
    for bs in (1, 16) if quick else ops.BLOCK_SIZES:
        cases.append(
            CheckCase(
                f"determinism_bs{bs}",
                "determinism",
                partial(determinism_checks, 96, 512, 256, bs),
            )
        )
    for bs in (1, 8, 16):
        cases.append(
            CheckCase(f"heads_layout_bs{bs}", "heads_layout", partial(heads_layout_checks, bs))
        )
    for name, shape in LAYER_CASES.items():
        cases.append(CheckCase(name, "layer", partial(layer_checks, *shape)))
    cases.append(CheckCase("scaled_softmax", "softmax", softmax_checks))
    cases.append(CheckCase("group_norm", "group_norm", group_norm_checks))
    cases += error_cases()
    return cases


def case_kind(case: Case) -> str:
    return case.kind


def run_case(case: Case) -> CaseResult:
    """Run one case; exceptions other than an expected error count as a failure."""
    start = time.perf_counter()
    try:
        checks = case.run()
        error = None
    except Exception as exception:  # reported in the result
        checks = {}
        error = f"{type(exception).__name__}: {str(exception)[:1000]}"
    passed = error is None and bool(checks) and all(c["passed"] for c in checks.values())
    result: CaseResult = {
        "name": case.name,
        "kind": case.kind,
        "params": case.params(),
        "checks": checks,
        "max_abs_error": max((c["max_abs_error"] for c in checks.values()), default=0.0),
        "max_error_over_tolerance": max(
            (c["error_over_tolerance"] for c in checks.values()), default=0.0
        ),
        "passed": passed,
        "seconds": round(time.perf_counter() - start, 4),
    }
    if error is not None:
        result["exception"] = error
    return result


def run_selftest(quick: bool, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every case (`quick`: the reduced list); the ops must be loaded first."""
    ops.loaded_ops()
    start = time.perf_counter()
    results = []
    for case in all_cases(quick):
        result = run_case(case)
        results.append(result)
        if log is not None:
            status = "ok  " if result["passed"] else "FAIL"
            log(
                f"{status} {result['name']:<36} max err {result['max_abs_error']:.3g} "
                f"(x{result['max_error_over_tolerance']:.3g} of tolerance) "
                f"{result['seconds']:.2f} s"
            )
    failed = [r["name"] for r in results if not r["passed"]]
    return {
        "quick": quick,
        "n_cases": len(results),
        "n_passed": len(results) - len(failed),
        "n_failed": len(failed),
        "failed": failed,
        "passed": not failed,
        "seconds": round(time.perf_counter() - start, 2),
        "tolerance": {
            "rtol": RTOL,
            "atol": ATOL,
            "rounding": "2 * gamma_L * (|a| . |b|), gamma_L = L u / (1 - L u), u = 2**-24",
            "sign_ones": "exact",
            "numeric_gradient": NUMERIC_GRADIENT_TOLERANCE,
        },
        "cases": results,
    }
