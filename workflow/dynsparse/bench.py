"""Benchmarks. Op benchmark (`bench_ops*`): the block-sparse ops against dense `tf.matmul`,
`tf.sparse.sparse_dense_matmul` and a masked dense layer (`tf.matmul(x, w * mask)`, as other RigL
implementations run), forward alone and forward + backward, all inside `tf.function`s, timed side
by side in one process (warm-up, then interleaved repeats, median).
"""

from __future__ import annotations

import csv
import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dynsparse.atomic import atomic_path

Log = Callable[[str], None]


@dataclass(frozen=True)
class OpBenchCase:
    batch: int
    n_in: int
    n_out: int
    density: float
    block_size: int

    @property
    def label(self) -> str:
        return f"b{self.batch} {self.n_in}x{self.n_out} d{self.density:g} bs{self.block_size}"


# Performance targets: (column, minimum) per case; checked and reported, not asserted.
OP_TARGETS: dict[OpBenchCase, list[tuple[str, float]]] = {
    OpBenchCase(256, 2048, 2048, 0.1, 16): [("fwdbwd_speedup_vs_dense", 4.0)],
    OpBenchCase(256, 2048, 2048, 0.1, 1): [
        ("fwdbwd_speedup_vs_dense", 1.5),
        ("fwd_speedup_vs_tfsparse", 10.0),
    ],
    OpBenchCase(256, 2048, 2048, 0.3, 16): [("fwdbwd_speedup_vs_dense", 1.5)],
    OpBenchCase(16, 784, 320, 0.1, 1): [
        ("fwd_speedup_vs_dense", 1.0),
        ("fwdbwd_speedup_vs_dense", 1.0),
    ],
}

TIMED = (
    "ours_fwd",
    "dense_fwd",
    "tfsparse_fwd",
    "masked_fwd",
    "ours_fwdbwd",
    "ours_fwdbwd_new_pattern",
    "dense_fwdbwd",
    "masked_fwdbwd",
    "ours_dense_grad",
    "dense_dense_grad",
)
BENCH_OPS_COLUMNS = [
    "batch",
    "n_in",
    "n_out",
    "density",
    "block_size",
    "nnz_blocks",
    *(f"{name}_ms" for name in TIMED),
    "fwd_speedup_vs_dense",
    "fwd_speedup_vs_tfsparse",
    "fwd_speedup_vs_masked",
    "fwdbwd_speedup_vs_dense",
    "fwdbwd_speedup_vs_masked",
    "fwdbwd_new_pattern_speedup_vs_dense",
    "dense_grad_speedup_vs_dense",
    "targets",
    "targets_met",
    "repeats",
    "threads",
]


def bench_ops_cases(sweep: str) -> list[OpBenchCase]:
    """`quick`: the target shapes and a few more; `full`: a grid; `tiny`: for tests."""
    if sweep == "tiny":
        return [OpBenchCase(4, 32, 16, 0.25, 1), OpBenchCase(4, 32, 32, 0.5, 16)]
    targets = list(OP_TARGETS)
    if sweep == "quick":
        return targets + [
            OpBenchCase(256, 2048, 2048, 0.1, 8),
            OpBenchCase(16, 784, 320, 0.1, 16),
            OpBenchCase(896, 96, 1536, 0.1, 1),  # transformer FFN, batch 32 x 28 tokens
        ]
    if sweep == "full":
        cases = list(targets)
        for batch, n_in, n_out in ((16, 784, 320), (256, 784, 320), (256, 2048, 2048)):
            for density in (0.05, 0.1, 0.3):
                for block_size in (1, 4, 8, 16):
                    case = OpBenchCase(batch, n_in, n_out, density, block_size)
                    if case not in cases:
                        cases.append(case)
        for n_in, n_out in ((96, 1536), (1536, 96), (96, 512)):
            for block_size in (1, 8):
                cases.append(OpBenchCase(896, n_in, n_out, 0.1, block_size))
        return cases
    raise ValueError(f"unknown op benchmark sweep {sweep!r}; use quick, full or tiny")


def _timed_functions(case: OpBenchCase, seed: int = 0) -> tuple[dict[str, Callable], int]:
    import tensorflow as tf

    from dynsparse import ops

    rng = np.random.default_rng(seed)
    bs = case.block_size
    n_block_rows, n_block_cols = case.n_in // bs, case.n_out // bs
    nnz = max(1, round(case.density * n_block_rows * n_block_cols))

    def pattern() -> tuple[np.ndarray, np.ndarray]:
        flat = np.sort(rng.choice(n_block_rows * n_block_cols, size=nnz, replace=False))
        return (flat // n_block_cols).astype(np.int32), (flat % n_block_cols).astype(np.int32)

    rows, cols = pattern()
    # Two patterns taken in turn: every call sees a new pattern, as right after a RigL update
    # (the kernels cache the grouping of the last pattern they saw).
    patterns = itertools.cycle(
        [tuple(tf.constant(a) for a in pattern()), (tf.constant(rows), tf.constant(cols))]
    )
    values = rng.standard_normal((nnz, bs, bs)).astype(np.float32)
    dense_w = ops.dense_from_blocks(values, rows, cols, (case.n_in, case.n_out))
    mask = (dense_w != 0).astype(np.float32)

    x = tf.constant(rng.standard_normal((case.batch, case.n_in)).astype(np.float32))
    dy = tf.constant(rng.standard_normal((case.batch, case.n_out)).astype(np.float32))
    values_v, rows_v, cols_v = tf.Variable(values), tf.Variable(rows), tf.Variable(cols)
    dense_v = tf.Variable(rng.standard_normal(dense_w.shape).astype(np.float32))
    masked_v, mask_c = tf.Variable(dense_w), tf.constant(mask)
    element_indices = np.argwhere(dense_w != 0)  # row-major, i.e. canonical order
    sparse_w = tf.sparse.SparseTensor(
        element_indices, dense_w[dense_w != 0], dense_shape=dense_w.shape
    )
    pooling = "NONE" if bs == 1 else "SUM"

    def dense_pooled(grad: tf.Tensor) -> tf.Tensor:
        grad = tf.abs(grad)
        if bs == 1:
            return grad
        blocks = tf.reshape(grad, [n_block_rows, bs, n_block_cols, bs])
        return tf.reduce_sum(blocks, axis=[1, 3])

    @tf.function
    def ours_fwd() -> tf.Tensor:
        return ops.bsmm(x, values_v, rows_v, cols_v, n_out=case.n_out)

    @tf.function
    def ours_fwdbwd() -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = ops.bsmm(x, values_v, rows_v, cols_v, n_out=case.n_out)
        return tape.gradient(y, [x, values_v], output_gradients=dy)

    @tf.function
    def ours_fwdbwd_given_pattern(rows: tf.Tensor, cols: tf.Tensor) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = ops.bsmm(x, values_v, rows, cols, n_out=case.n_out)
        return tape.gradient(y, [x, values_v], output_gradients=dy)

    def ours_fwdbwd_new_pattern() -> list[tf.Tensor]:
        return ours_fwdbwd_given_pattern(*next(patterns))

    @tf.function
    def dense_fwd() -> tf.Tensor:
        return tf.matmul(x, dense_v)

    @tf.function
    def dense_fwdbwd() -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.matmul(x, dense_v)
        return tape.gradient(y, [x, dense_v], output_gradients=dy)

    @tf.function
    def tfsparse_fwd() -> tf.Tensor:
        return tf.sparse.sparse_dense_matmul(x, sparse_w)

    @tf.function
    def masked_fwd() -> tf.Tensor:
        return tf.matmul(x, masked_v * mask_c)

    @tf.function
    def masked_fwdbwd() -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.matmul(x, masked_v * mask_c)
        return tape.gradient(y, [x, masked_v], output_gradients=dy)

    @tf.function
    def ours_dense_grad() -> tf.Tensor:
        return ops.bsmm_dense_grad(x, dy, block_size=bs, pooling=pooling)

    @tf.function
    def dense_dense_grad() -> tf.Tensor:
        return dense_pooled(tf.matmul(x, dy, transpose_a=True))

    functions = {
        "ours_fwd": ours_fwd,
        "dense_fwd": dense_fwd,
        "tfsparse_fwd": tfsparse_fwd,
        "masked_fwd": masked_fwd,
        "ours_fwdbwd": ours_fwdbwd,
        "ours_fwdbwd_new_pattern": ours_fwdbwd_new_pattern,
        "dense_fwdbwd": dense_fwdbwd,
        "masked_fwdbwd": masked_fwdbwd,
        "ours_dense_grad": ours_dense_grad,
        "dense_dense_grad": dense_dense_grad,
    }
    return functions, nnz


def _ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator > 0 else float("nan")


def bench_ops_case(case: OpBenchCase, repeats: int, warmup: int = 3) -> dict[str, Any]:
    """Median milliseconds per call of each variant, with the speed-up ratios."""
    import tensorflow as tf

    functions, nnz = _timed_functions(case)
    for function in functions.values():
        for _ in range(warmup):
            function()
    samples: dict[str, list[float]] = {name: [] for name in functions}
    # Interleaved, so that a slow spell of a shared machine hits every variant alike.
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - start)
    ms = {name: float(np.median(times)) * 1e3 for name, times in samples.items()}
    row: dict[str, Any] = {
        "batch": case.batch,
        "n_in": case.n_in,
        "n_out": case.n_out,
        "density": case.density,
        "block_size": case.block_size,
        "nnz_blocks": nnz,
        **{f"{name}_ms": round(ms[name], 4) for name in TIMED},
        "fwd_speedup_vs_dense": _ratio(ms["dense_fwd"], ms["ours_fwd"]),
        "fwd_speedup_vs_tfsparse": _ratio(ms["tfsparse_fwd"], ms["ours_fwd"]),
        "fwd_speedup_vs_masked": _ratio(ms["masked_fwd"], ms["ours_fwd"]),
        "fwdbwd_speedup_vs_dense": _ratio(ms["dense_fwdbwd"], ms["ours_fwdbwd"]),
        "fwdbwd_speedup_vs_masked": _ratio(ms["masked_fwdbwd"], ms["ours_fwdbwd"]),
        "fwdbwd_new_pattern_speedup_vs_dense": _ratio(
            ms["dense_fwdbwd"], ms["ours_fwdbwd_new_pattern"]
        ),
        "dense_grad_speedup_vs_dense": _ratio(ms["dense_dense_grad"], ms["ours_dense_grad"]),
        "repeats": repeats,
        "threads": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
    }
    targets = OP_TARGETS.get(case, [])
    row["targets"] = "; ".join(f"{column} >= {minimum:g}" for column, minimum in targets)
    row["targets_met"] = (
        all(row[column] >= minimum for column, minimum in targets) if targets else ""
    )
    return row


def bench_ops(sweep: str, repeats: int | None = None, log: Log | None = None) -> list[dict]:
    """One row per case of the sweep (see BENCH_OPS_COLUMNS); the ops must be loaded."""
    from dynsparse import ops

    ops.loaded_ops()
    cases = bench_ops_cases(sweep)
    if repeats is None:
        repeats = {"tiny": 3, "quick": 15, "full": 11}[sweep]
    rows = []
    for case in cases:
        start = time.perf_counter()
        row = bench_ops_case(case, repeats=repeats)
        rows.append(row)
        if log is not None:
            log(
                f"{case.label}: fwd x{row['fwd_speedup_vs_dense']} vs dense, "
                f"fwd+bwd x{row['fwdbwd_speedup_vs_dense']} vs dense "
                f"({time.perf_counter() - start:.1f} s)"
            )
    return rows


def bench_ops_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table of times and speed-ups, with the targets."""
    header = (
        f"{'case':<32} {'ours fwd':>9} {'dense':>8} {'tf.sparse':>9} {'ours f+b':>9} "
        f"{'dense f+b':>9} {'masked f+b':>10} | {'fwd/dense':>9} {'fwd/sparse':>10} "
        f"{'fwd/masked':>10} {'f+b/dense':>9} {'f+b/masked':>10} {'new pat.':>8}  targets"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        case = OpBenchCase(
            row["batch"], row["n_in"], row["n_out"], row["density"], row["block_size"]
        )
        met = row["targets_met"]
        target_text = f"{'MET' if met else 'NOT MET'}: {row['targets']}" if row["targets"] else ""
        lines.append(
            f"{case.label:<32} {row['ours_fwd_ms']:>9.3f} {row['dense_fwd_ms']:>8.3f} "
            f"{row['tfsparse_fwd_ms']:>9.3f} {row['ours_fwdbwd_ms']:>9.3f} "
            f"{row['dense_fwdbwd_ms']:>9.3f} {row['masked_fwdbwd_ms']:>10.3f} | "
            f"{row['fwd_speedup_vs_dense']:>9.2f} {row['fwd_speedup_vs_tfsparse']:>10.2f} "
            f"{row['fwd_speedup_vs_masked']:>10.2f} {row['fwdbwd_speedup_vs_dense']:>9.2f} "
            f"{row['fwdbwd_speedup_vs_masked']:>10.2f} "
            f"{row['fwdbwd_new_pattern_speedup_vs_dense']:>8.2f}  {target_text}"
        )
    lines.append(
        "times: median ms per call; ratios: their time / ours (> 1: ours is faster); new pat.: "
        "f+b/dense when every call brings a new pattern (the grouping cache misses)"
    )
    return "\n".join(lines)


def write_bench_ops_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=BENCH_OPS_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({column: row[column] for column in BENCH_OPS_COLUMNS})


def plot_bench_ops(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Speed-ups against dense (forward, forward + backward) and tf.sparse, one group per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [
        OpBenchCase(r["batch"], r["n_in"], r["n_out"], r["density"], r["block_size"]).label
        for r in rows
    ]
    series = [
        ("fwd_speedup_vs_dense", "forward vs dense"),
        ("fwdbwd_speedup_vs_dense", "forward + backward vs dense"),
        ("fwdbwd_speedup_vs_masked", "forward + backward vs masked dense"),
        ("fwd_speedup_vs_tfsparse", "forward vs tf.sparse"),
    ]
    positions = np.arange(len(rows))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.75 * len(rows) + 3), 5.5))
    for i, (column, name) in enumerate(series):
        ax.bar(
            positions + (i - (len(series) - 1) / 2) * width,
            [r[column] for r in rows],
            width,
            label=name,
        )
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("speed-up (their time / ours)")
    ax.set_xticks(positions, labels, rotation=45, ha="right", fontsize=8)
    threads = rows[0]["threads"] if rows else "?"
    ax.set_title(f"Block-sparse ops vs TensorFlow ({threads} threads, median of interleaved runs)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
