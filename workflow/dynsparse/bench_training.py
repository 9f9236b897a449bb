"""Training speed of the default models, sparse (native ops) beside dense, on synthetic data.

For each case: the ordinary training step (ms per batch and samples/s, measured inside the same
chunked `tf.function` as training), the RigL update step (training step plus every sparse layer's
dense gradient), and the host-side prune-and-regrow with its optimizer-slot re-layout. The
training step is timed in TIMING_ROUNDS rounds over all cases (median), so dense and sparse see
the same machine load; each row records the CPU, the kernels' instruction set and the threads.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dynsparse.bench import bench_threads
from dynsparse.blocks import IMAGE_SIDE
from dynsparse.registry import MODELS, model_entry
from dynsparse.settings import ModelSettings
from dynsparse.tfsetup import configure_tensorflow

CSV_COLUMNS = (
    "model",
    "case",
    "sparsity",
    "block_size",
    "pooling",
    "batch_size",
    "threads",
    "steps",
    "step_ms",
    "empty_call_ms",
    "samples_per_second",
    "speedup_vs_dense",
    "update_step_ms",
    "host_update_ms",
    "nonzero_weights",
    "dense_weights",
    "held_floats",
    "held_floats_vs_dense",
    "baseline",
    "cpu",
    "isa",
    "rounds",
)
# Timed chunks per case, taken round-robin over the cases compared with one baseline (dense
# beside sparse in every round), each of 1/TIMING_ROUNDS of the model's bench steps; step_ms is
# their median. On a shared machine a load burst then hits every case of a round instead of one
# case's only sample; seven short rounds rather than three long ones, because this machine's speed
# drifts by tens of percent over seconds (docs/performance.md). The groups are timed one after
# the other: a training process trains one model, while a round through every case would run the
# small FC steps right after the transformer's and the wide layer's (tens of MB each), whose
# traces in the caches slowed the FC steps by 5-20 % (docs/performance.md, wave 5).
TIMING_ROUNDS = 7


@dataclass(frozen=True)
class BenchCase:
    model: str
    name: str
    changes: dict[str, Any]
    # The case whose samples/s this one is compared with (same model, same widths and batch).
    baseline: str = "dense"
    steps: int | None = None  # None: the model's default step count


DEFAULT_CASES = (
    BenchCase("fc", "dense", {"densities": [1.0, 1.0]}),
    BenchCase("fc", "sparse_0.1_0.3", {"densities": [0.1, 0.3], "block_size": 1}),
    BenchCase(
        "fc", "sparse_0.1_0.3_b16", {"densities": [0.1, 0.3], "block_size": 16, "pooling": "SUM"}
    ),
    # A wide FC layer, where sparsity should pay off: 784 -> 4096 -> 10 at batch 256.
    BenchCase(
        "fc",
        "wide_dense",
        {"densities": [1.0, 1.0], "hidden_size": 4096, "batch_size": 256},
        baseline="wide_dense",
        steps=40,
    ),
    BenchCase(
        "fc",
        "wide_sparse_0.1_b16",
        {
            "densities": [0.1, 0.3],
            "hidden_size": 4096,
            "batch_size": 256,
            "block_size": 16,
            "pooling": "SUM",
        },
        baseline="wide_dense",
        steps=40,
    ),
    BenchCase("transformer", "dense", {"sparsity": 0.0}),
    BenchCase("transformer", "sparse_0.9", {"sparsity": 0.9, "block_size": 1}),
    BenchCase("transformer", "sparse_0.5_b8", {"sparsity": 0.5, "block_size": 8, "pooling": "SUM"}),
)


@dataclass
class PreparedCase:
    """A case's traced training chunk and batches, and its row without the step timing."""

    row: dict[str, Any]
    train_chunk: Callable[[np.ndarray], Any]
    batches: np.ndarray

    def time_chunk(self) -> float:
        """Seconds per step of one compiled chunk over all of `batches`."""
        return self.time_call(self.batches) / len(self.batches)

    def time_empty_call(self) -> float:
        """Seconds of a call of the training function with no step: its fixed cost per call."""
        return self.time_call(self.batches[:0])

    def time_call(self, batches: np.ndarray) -> float:
        start = time.perf_counter()
        losses, _ = self.train_chunk(batches)
        losses.numpy()
        return time.perf_counter() - start


def prepare_case(
    case: BenchCase, base_settings: ModelSettings, steps: int, n_images: int = 2048
) -> PreparedCase:
    """Build and trace the case's model and step functions; time its RigL update once."""
    import tensorflow as tf

    from dynsparse.layers import make_optimizer
    from dynsparse.methods import METHODS, update_layers
    from dynsparse.models import build_model
    from dynsparse.steps import StepFunctions

    entry = model_entry(case.model)
    settings = entry.parse({**base_settings.to_dict(), **case.changes})
    batch_size = settings.batch_size
    model = build_model(settings, tf.random.Generator.from_seed(settings.seed))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_images, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    x_train = tf.constant(model.prepare(images))
    y_train = tf.constant(rng.integers(0, 10, size=n_images).astype(np.int32))
    trainable = list(model.trainable_variables)
    optimizer = make_optimizer(settings.optimizer.name, trainable, settings.optimizer.kwargs)
    optimizer.learning_rate.assign(1e-4)
    functions = StepFunctions(
        model, optimizer, x_train, y_train, batch_size, tuple(x_train.shape[1:])
    )
    batches = rng.integers(0, n_images, size=(steps, batch_size)).astype(np.int32)

    functions.train_chunk(batches[:2])  # trace and warm up

    update_ms = host_ms = float("nan")
    sparse_layers = model.sparse_layers
    if sparse_layers:
        functions.update_step(batches[0])
        repeats = 3
        start = time.perf_counter()
        for i in range(repeats):
            _, _, dense = functions.update_step(batches[i % len(batches)])
            dense_grads = [g.numpy() for g in dense]
        update_ms = (time.perf_counter() - start) / repeats * 1000
        start = time.perf_counter()
        update_layers(
            sparse_layers,
            optimizer,
            dense_grads,
            1.0,
            settings.rigl.prune_ratio,
            METHODS["rigl"],  # the update whose host cost is largest
            np.random.default_rng(1),
        )
        host_ms = (time.perf_counter() - start) * 1000

    nonzero = sum(layer.nnz * layer.block_size**2 for layer in sparse_layers)
    nonzero += sum(layer.n_in * layer.n_out for layer in model.layers if layer not in sparse_layers)
    dense_weights = sum(layer.n_in * layer.n_out for layer in model.layers)
    # Memory that scales with the model: trainable values plus the optimizer's slots for them.
    held_floats = sum(int(v.shape.num_elements()) for v in trainable)
    held_floats += sum(
        int(slot.shape.num_elements()) for slots in optimizer.slots.values() for slot in slots
    )
    row = {
        "model": case.model,
        "case": case.name,
        "baseline": case.baseline,
        "held_floats": held_floats,
        "sparsity": round(entry.bench_sparsity(settings, nonzero / dense_weights), 4),
        "block_size": settings.block_size if sparse_layers else 1,
        "pooling": settings.pooling if sparse_layers else "",
        "batch_size": batch_size,
        "steps": steps,
        "update_step_ms": update_ms,
        "host_update_ms": host_ms,
        "nonzero_weights": int(nonzero),
        "dense_weights": int(dense_weights),
    }
    return PreparedCase(row, functions.train_chunk, batches)


def bench_training(
    ops_path: str,
    threads: int,
    settings: dict[str, ModelSettings],
    log: Callable[[str], None] = print,
    *,
    steps: dict[str, int] | None = None,
    cases: tuple[BenchCase, ...] = DEFAULT_CASES,
) -> list[dict[str, Any]]:
    """Benchmark every case; `settings[model]` are the model's resolved defaults."""
    threads = bench_threads(threads)
    configure_tensorflow(threads)
    from dynsparse import ops

    ops.load_ops(ops_path)
    steps = {**{name: entry.bench_steps for name, entry in MODELS.items()}, **(steps or {})}
    from dynsparse.bench import cpu_model

    prepared = []
    for case in cases:
        chunk_steps = max(1, (case.steps or steps[case.model]) // TIMING_ROUNDS)
        prepared.append(prepare_case(case, settings[case.model], chunk_steps))
    samples: list[list[float]] = [[] for _ in prepared]
    call_samples: list[list[float]] = [[] for _ in prepared]
    for group in comparison_groups(cases):
        for _ in range(TIMING_ROUNDS):
            for index in group:
                samples[index].append(prepared[index].time_chunk())
                call_samples[index].append(prepared[index].time_empty_call())
    rows: list[dict[str, Any]] = []
    for case, item, case_samples, case_calls in zip(
        cases, prepared, samples, call_samples, strict=True
    ):
        row = item.row
        step_seconds = float(np.median(case_samples))
        row["steps"] = len(item.batches) * TIMING_ROUNDS
        row["step_ms"] = step_seconds * 1000
        # The call-level cost beside the step: a call of the training function with no step.
        row["empty_call_ms"] = float(np.median(case_calls)) * 1000
        row["samples_per_second"] = row["batch_size"] / step_seconds
        row.update(threads=threads, cpu=cpu_model(), isa=ops.kernel_isa(), rounds=TIMING_ROUNDS)
        rows.append(row)
        log(
            f"{case.model} {case.name}: {row['step_ms']:.2f} ms/step, "
            f"{row['samples_per_second']:.0f} samples/s, update step {row['update_step_ms']:.1f} "
            f"ms, host update {row['host_update_ms']:.1f} ms"
        )
    for row in rows:
        dense = [r for r in rows if r["model"] == row["model"] and r["case"] == row["baseline"]]
        row["speedup_vs_dense"] = (
            row["samples_per_second"] / dense[0]["samples_per_second"] if dense else float("nan")
        )
        row["held_floats_vs_dense"] = (
            row["held_floats"] / dense[0]["held_floats"] if dense else float("nan")
        )
    return rows


def comparison_groups(cases: Sequence[BenchCase]) -> list[list[int]]:
    """The indices of `cases` by (model, baseline), in order of first appearance: the cases timed
    in rounds together, each beside the baseline it is compared with."""
    groups: dict[tuple[str, str], list[int]] = {}
    for index, case in enumerate(cases):
        groups.setdefault((case.model, case.baseline), []).append(index)
    return list(groups.values())


def thread_counts(requested: int) -> list[int]:
    """The thread counts the stage measures: 1 (as every training job runs) and the machine's."""
    return sorted({1, bench_threads(requested)})


def _bench_in_child(
    ops_path: str, threads: int, settings: dict[str, ModelSettings], options: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[str]]:
    """`bench_training` in a fresh Python process (`python -m dynsparse.bench_training`).

    A subprocess, not multiprocessing: spawn re-imports the parent's main module (a Snakemake
    stage script cannot be imported), and fork is unsafe once TensorFlow runs in the parent.
    """
    import pickle
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    workflow_dir = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [workflow_dir, os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        job, result = Path(tmp) / "job.pkl", Path(tmp) / "result.pkl"
        job.write_bytes(pickle.dumps((ops_path, threads, settings, options)))
        command = [sys.executable, "-m", "dynsparse.bench_training", str(job), str(result)]
        done = subprocess.run(
            command, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"bench_training at {threads} thread(s) failed (exit {done.returncode}):\n"
                + done.stderr[-4000:]
            )
        rows, lines = pickle.loads(result.read_bytes())
    return rows, lines


def bench_training_per_thread_count(
    ops_path: str,
    requested_threads: int,
    settings: dict[str, ModelSettings],
    log: Callable[[str], None] = print,
    **options: Any,
) -> list[dict[str, Any]]:
    """`bench_training` (with `options`) at each of `thread_counts(requested_threads)`, each in a
    fresh process.

    TensorFlow fixes its thread pools when it starts, so every count needs its own process. At
    these sizes one thread is often the fastest for dense and sparse alike (thread hand-offs
    cost more than they save), and the pipeline trains every sample on one thread; the machine's
    count shows what more cores give. Each row's ratio is to dense at the same count.
    """
    rows: list[dict[str, Any]] = []
    for threads in thread_counts(requested_threads):
        part, lines = _bench_in_child(ops_path, threads, settings, options)
        for line in lines:
            log(f"{threads} thread(s): {line}")
        rows += part
    return rows


def write_csv(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    import csv

    from dynsparse.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    key: (f"{value:.4g}" if isinstance(value, float) else value)
                    for key, value in row.items()
                }
            )


def _child_main(job_path: str, result_path: str) -> None:
    import pickle
    from pathlib import Path

    ops_path, threads, settings, options = pickle.loads(Path(job_path).read_bytes())
    lines: list[str] = []
    rows = bench_training(ops_path, threads, settings, lines.append, **options)
    Path(result_path).write_bytes(pickle.dumps((rows, lines)))


if __name__ == "__main__":
    import sys

    _child_main(*sys.argv[1:3])
