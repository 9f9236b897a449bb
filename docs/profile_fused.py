"""What the fused native ops save per training step: the figures of docs/performance.md, §5.

    THREADS=1 .venv/bin/python docs/profile_fused.py \
        fc/dense fc/sparse_0.1_0.3 fc/sparse_0.1_0.3_b16

For each case of dynsparse.bench_training.DEFAULT_CASES, the training's own compiled chunk
(dynsparse.steps.StepFunctions.train_chunk) in three variants, timed interleaved in one process
(so the ratios survive a loaded machine), median of ROUNDS:
- `per-variable`: TensorFlow's ResourceApply* op per variable, TensorFlow's dropout (wave 1);
- `fused optimizer`: one DynsparseApplyAdam/Momentum op over all trainables (now the default);
- `+ fused dropout`: also dynsparse.ops.dropout in place of models.dropout (one native op).
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from dynsparse.tfsetup import configure_tensorflow  # noqa: E402

configure_tensorflow(int(os.environ.get("THREADS", "1")))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import yaml  # noqa: E402
from dynsparse import models, ops  # noqa: E402
from dynsparse.bench_training import DEFAULT_CASES  # noqa: E402
from dynsparse.layers import make_optimizer  # noqa: E402
from dynsparse.registry import model_entry  # noqa: E402
from dynsparse.steps import StepFunctions  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "5"))


@contextlib.contextmanager
def native_dropout(enabled: bool) -> Iterator[None]:
    """models.dropout replaced by the fused op while the step functions are traced."""
    original = models.dropout
    if enabled:
        models.dropout = lambda x, rate, rng: x if rate <= 0.0 else ops.dropout(x, rate, rng)
    try:
        yield
    finally:
        models.dropout = original


def variant(
    spec: str, config: dict, fused_optimizer: bool, fused_dropout: bool
) -> tuple[Callable[[Any], Any], int]:
    model_name, case_name = spec.split("/")
    case = next(c for c in DEFAULT_CASES if (c.model, c.name) == (model_name, case_name))
    settings = model_entry(model_name).parse(
        {**config[model_name]["defaults"], "seed": 1, **case.changes}
    )
    batch = settings.batch_size
    model = models.build_model(settings, tf.random.Generator.from_seed(0))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2048, 28, 28), dtype=np.uint8)
    x_train = tf.constant(model.prepare(images))
    y_train = tf.constant(rng.integers(0, 10, 2048).astype(np.int32))
    optimizer = make_optimizer(
        settings.optimizer.name, list(model.trainable_variables), settings.optimizer.kwargs
    )
    optimizer.learning_rate.assign(1e-4)
    if not fused_optimizer:
        optimizer.apply = optimizer._apply_per_variable  # type: ignore[method-assign]  # noqa: SLF001
    steps_fn = StepFunctions(model, optimizer, x_train, y_train, batch, tuple(x_train.shape[1:]))
    with native_dropout(fused_dropout):
        steps_fn.train_chunk(rng.integers(0, 2048, size=(2, batch)).astype(np.int32))
    return steps_fn.train_chunk, batch


def compare(spec: str, config: dict) -> None:
    variants = {
        "per-variable (wave 1)": (False, False),
        "fused optimizer": (True, False),
        "+ fused dropout": (True, True),
    }
    built = {name: variant(spec, config, *flags) for name, flags in variants.items()}
    batch = next(iter(built.values()))[1]
    steps = int(os.environ.get("STEPS", "300" if spec.startswith("fc") else "20"))
    batches = np.random.default_rng(1).integers(0, 2048, size=(steps, batch)).astype(np.int32)
    samples: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(ROUNDS):
        for name, (train_chunk, _) in built.items():
            start = time.perf_counter()
            train_chunk(batches)[0].numpy()
            samples[name].append((time.perf_counter() - start) / steps * 1e6)
    threads = tf.config.threading.get_intra_op_parallelism_threads()
    print(f"== {spec}: batch {batch}, {threads} thread(s), kernels {ops.kernel_isa()}")
    for name in variants:
        print(
            f"  {name:24s} {np.median(samples[name]):9.1f} us/step  (all: "
            f"{', '.join(f'{s:.0f}' for s in samples[name])})"
        )


if __name__ == "__main__":
    libraries = sorted((REPO / "build/ops").glob("*/libdynsparse_ops.so"), key=os.path.getmtime)
    if "LIB" not in os.environ and not libraries:
        sys.exit("no built op library under build/ops/: run `snakemake build_ops`, or set LIB=")
    ops.load_ops(os.environ.get("LIB") or str(libraries[-1]))
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for spec in sys.argv[1:] or ["fc/dense", "fc/sparse_0.1_0.3", "fc/sparse_0.1_0.3_b16"]:
        compare(spec, config)
