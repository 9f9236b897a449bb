"""Benchmarks. Op benchmark (`bench_ops*`): the block-sparse ops against dense `tf.matmul`
(oneDNN, same threads), `tf.sparse.sparse_dense_matmul` and a masked dense layer
(`tf.matmul(x, w * mask)`, as other RigL implementations run), forward alone and forward +
backward, timed side by side in one process (warm-up, then interleaved repeats, median; a variant
that has used VARIANT_SECONDS stops at MIN_REPEATS samples: `repeats`, `fewest_repeats`).

Two figures per variant: `<name>_ms` is the time of one repetition inside a compiled loop of many
(`tf.while_loop` in one `tf.function`), so Python and dispatch overhead do not hide the kernel at
small shapes; the ratios (`fwdbwd_speedup_vs_dense`, ...) compare these. `<name>_call_ms` is the
time of one `tf.function` call from Python, with its own ratios (`..._call`) beside them.
"""

from __future__ import annotations

import csv
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dynsparse.atomic import atomic_path

Log = Callable[[str], None]


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def bench_threads(requested: int) -> int:
    """The threads of a benchmark stage: the rule's, at most the cores this machine gives us.

    The bench rules ask for `workflow.cores`, which `--cores 4` on a 2-core machine sets to 4;
    dense and sparse then run on the same, real, thread count.
    """
    return max(1, min(int(requested), available_cores()))


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


# Performance targets (issue 9): (column, minimum) per case; checked and reported, not asserted.
OP_TARGETS: dict[OpBenchCase, list[tuple[str, float]]] = {
    OpBenchCase(16, 784, 320, 0.1, 1): [
        ("fwdbwd_speedup_vs_dense", 3.0),
        ("fwd_speedup_vs_dense", 1.0),
    ],
    OpBenchCase(896, 96, 1536, 0.1, 1): [("fwdbwd_speedup_vs_dense", 3.0)],
    OpBenchCase(256, 2048, 2048, 0.1, 16): [("fwdbwd_speedup_vs_dense", 5.0)],
    OpBenchCase(256, 2048, 2048, 0.1, 1): [
        ("fwdbwd_speedup_vs_dense", 2.5),
        ("fwd_speedup_vs_tfsparse", 10.0),
    ],
    OpBenchCase(256, 2048, 2048, 0.3, 16): [("fwdbwd_speedup_vs_dense", 2.0)],
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
    *(f"{name}_call_ms" for name in TIMED),
    "fwd_speedup_vs_dense_call",
    "fwdbwd_speedup_vs_dense_call",
    "fwdbwd_new_pattern_speedup_vs_dense_call",
    "targets",
    "targets_met",
    "repeats",
    "fewest_repeats",
    "loop_reps",
    "threads",
    "isa",
    "cpu",
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
            # The transformer (batch 32 x 28 tokens): attention output, QKV at block 8.
            OpBenchCase(896, 512, 96, 0.1, 1),
            OpBenchCase(896, 96, 1536, 0.5, 8),
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


Body = Callable[[Any], list[Any]]


def _timed_bodies(case: OpBenchCase, seed: int = 0) -> tuple[dict[str, Body], int]:
    """One function per timed variant: repetition number i (an int32 scalar) -> its outputs."""
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
    # Two patterns taken in turn: every repetition sees a new pattern, as right after a RigL
    # update (the kernels cache the grouping of the last pattern they saw).
    other_rows, other_cols = pattern()
    pattern_rows = tf.constant(np.stack([other_rows, rows]))
    pattern_cols = tf.constant(np.stack([other_cols, cols]))
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

    def fwdbwd(forward: Callable[[], tf.Tensor], weight: Any) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = forward()
        # y is an output too: the gradients given dy do not read it, so without this the
        # forward op would be pruned from the graph and "fwd+bwd" would time the backward only.
        return [y, *tape.gradient(y, [x, weight], output_gradients=dy)]

    def ours(rows: Any, cols: Any) -> Callable[[], tf.Tensor]:
        return lambda: ops.bsmm(x, values_v, rows, cols, n_out=case.n_out)

    def new_pattern(i: Any) -> list[tf.Tensor]:
        rows, cols = tf.gather(pattern_rows, i % 2), tf.gather(pattern_cols, i % 2)
        return fwdbwd(ours(rows, cols), values_v)

    bodies: dict[str, Body] = {
        "ours_fwd": lambda i: [ours(rows_v, cols_v)()],
        "dense_fwd": lambda i: [tf.matmul(x, dense_v)],
        "tfsparse_fwd": lambda i: [tf.sparse.sparse_dense_matmul(x, sparse_w)],
        "masked_fwd": lambda i: [tf.matmul(x, masked_v * mask_c)],
        "ours_fwdbwd": lambda i: fwdbwd(ours(rows_v, cols_v), values_v),
        "ours_fwdbwd_new_pattern": new_pattern,
        "dense_fwdbwd": lambda i: fwdbwd(lambda: tf.matmul(x, dense_v), dense_v),
        "masked_fwdbwd": lambda i: fwdbwd(lambda: tf.matmul(x, masked_v * mask_c), masked_v),
        "ours_dense_grad": lambda i: [ops.bsmm_dense_grad(x, dy, block_size=bs, pooling=pooling)],
        "dense_dense_grad": lambda i: [dense_pooled(tf.matmul(x, dy, transpose_a=True))],
    }
    return bodies, nnz


def _compiled(body: Body) -> tuple[Callable[[int], Any], Callable[[int], Any]]:
    """`call(i)`: one repetition per tf.function call; `loop(n)`: n repetitions in one call.

    The loop (a tf.while_loop) carries a sum of one element of every output of each repetition:
    a control dependency alone lets Grappler prune a repetition whose outputs are unused.
    """
    import tensorflow as tf

    scalar = [tf.TensorSpec([], tf.int32)]

    @tf.function(input_signature=scalar)
    def call(i: tf.Tensor) -> list[tf.Tensor]:
        return body(i)

    @tf.function(input_signature=scalar)
    def loop(n: tf.Tensor) -> tf.Tensor:
        def step(i: tf.Tensor, total: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            firsts = [tf.reshape(output, [-1])[0] for output in body(i)]
            return i + 1, total + tf.add_n(firsts)

        start = (tf.constant(0), tf.constant(0.0))
        return tf.while_loop(lambda i, _: i < n, step, start, parallel_iterations=1)[1]

    return (lambda i: call(tf.constant(i, tf.int32))), (lambda n: loop(tf.constant(n, tf.int32)))


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator > 0 else float("nan")


# Repetitions per timed loop: enough for ~LOOP_SECONDS, within LOOP_REPS.
LOOP_SECONDS = 0.02
LOOP_REPS = (4, 400)
# A variant that has taken VARIANT_SECONDS of a case's time stops once it has MIN_REPEATS samples:
# tf.sparse at 256 x 2048^2 takes 0.15-0.5 s a repetition, 30-100x ours, and its 11 interleaved
# samples were a third of the benchmark stage (the pipeline's critical path) for a ratio of 30x
# against a target of 10x. Every other variant of the quick sweep stays under the budget.
VARIANT_SECONDS = 4.0
MIN_REPEATS = 3


def keeps_sampling(seconds_spent: float, samples: int) -> bool:
    """Whether a variant takes another interleaved sample (see VARIANT_SECONDS)."""
    return samples < MIN_REPEATS or seconds_spent < VARIANT_SECONDS


def bench_ops_case(case: OpBenchCase, repeats: int, warmup: int = 3) -> dict[str, Any]:
    """Median milliseconds per repetition of each variant (in a loop, and per call), with the
    speed-up ratios."""
    import tensorflow as tf

    from dynsparse import ops

    bodies, nnz = _timed_bodies(case)
    compiled = {name: _compiled(body) for name, body in bodies.items()}
    reps: dict[str, int] = {}
    for name, (call, loop) in compiled.items():
        for i in range(warmup):
            call(i)
        start = time.perf_counter()
        call(warmup)
        seconds = time.perf_counter() - start
        reps[name] = int(np.clip(LOOP_SECONDS / max(seconds, 1e-6), *LOOP_REPS))
        loop(2)  # trace
    call_samples: dict[str, list[float]] = {name: [] for name in compiled}
    loop_samples: dict[str, list[float]] = {name: [] for name in compiled}
    spent = dict.fromkeys(compiled, 0.0)
    # Interleaved, so that a slow spell of a shared machine hits every variant alike.
    for repeat in range(repeats):
        for name, (call, loop) in compiled.items():
            if not keeps_sampling(spent[name], len(loop_samples[name])):
                continue
            start = time.perf_counter()
            call(repeat)
            call_seconds = time.perf_counter() - start
            start = time.perf_counter()
            loop(reps[name]).numpy()
            loop_seconds = time.perf_counter() - start
            call_samples[name].append(call_seconds)
            loop_samples[name].append(loop_seconds / reps[name])
            spent[name] += call_seconds + loop_seconds
    ms = {name: float(np.median(times)) * 1e3 for name, times in loop_samples.items()}
    call_ms = {name: float(np.median(times)) * 1e3 for name, times in call_samples.items()}
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
        **{f"{name}_call_ms": round(call_ms[name], 4) for name in TIMED},
        "fwd_speedup_vs_dense_call": _ratio(call_ms["dense_fwd"], call_ms["ours_fwd"]),
        "fwdbwd_speedup_vs_dense_call": _ratio(call_ms["dense_fwdbwd"], call_ms["ours_fwdbwd"]),
        "fwdbwd_new_pattern_speedup_vs_dense_call": _ratio(
            call_ms["dense_fwdbwd"], call_ms["ours_fwdbwd_new_pattern"]
        ),
        "repeats": max(len(samples) for samples in loop_samples.values()),
        "fewest_repeats": min(len(samples) for samples in loop_samples.values()),
        "loop_reps": min(reps.values()),
        "threads": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
        "isa": ops.kernel_isa(),
        "cpu": cpu_model(),
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
        repeats = {"tiny": 3, "quick": 11, "full": 7}[sweep]
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
        f"{'fwd/masked':>10} {'f+b/dense':>9} {'f+b/masked':>10} {'new pat.':>8} {'call':>6}  "
        "targets"
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
            f"{row['fwdbwd_new_pattern_speedup_vs_dense']:>8.2f} "
            f"{row['fwdbwd_speedup_vs_dense_call']:>6.2f}  {target_text}"
        )
    lines.append(
        "times: median ms per repetition inside a compiled loop; ratios: their time / ours "
        "(> 1: ours is faster); new pat.: f+b/dense when every repetition brings a new pattern "
        "(the grouping cache misses); call: f+b/dense per tf.function call from Python"
    )
    if rows:
        lines.append(f"{rows[0]['cpu']}, {rows[0]['threads']} threads, kernels: {rows[0]['isa']}")
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
    about = f"{rows[0]['cpu']}, {rows[0]['threads']} threads, {rows[0]['isa']}" if rows else ""
    ax.set_title(f"Block-sparse ops vs TensorFlow, in a compiled loop ({about})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
