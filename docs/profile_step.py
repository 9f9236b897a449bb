"""Where the time of a training step goes: the numbers in docs/performance.md.

    THREADS=1 .venv/bin/python docs/profile_step.py \
        fc/dense fc/sparse_0.1_0.3 transformer/sparse_0.9

For each case of dynsparse.bench_training.DEFAULT_CASES named: the step and its parts timed as
variants of the same compiled loop (full step, forward + backward, forward, the loop and the batch
gather alone), then the per-op time of the full step from the TensorFlow profiler (XPlane): the
TOP (default 25) slowest ops.
The step functions are the training's own (dynsparse.steps.StepFunctions).
"""

from __future__ import annotations

import collections
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from dynsparse.tfsetup import configure_tensorflow  # noqa: E402

configure_tensorflow(int(os.environ.get("THREADS", "1")))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import yaml  # noqa: E402
from dynsparse import ops  # noqa: E402
from dynsparse.bench_training import DEFAULT_CASES  # noqa: E402
from dynsparse.layers import make_optimizer  # noqa: E402
from dynsparse.models import build_model  # noqa: E402
from dynsparse.registry import model_entry  # noqa: E402
from dynsparse.steps import StepFunctions, cross_entropy  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402


def op_times(function, argument, steps: int) -> list[tuple[float, str]]:
    """Microseconds per step of every op the profiler saw on the executor threads."""
    with tempfile.TemporaryDirectory() as logdir:
        options = tf.profiler.experimental.ProfilerOptions(
            host_tracer_level=int(os.environ.get("TRACE_LEVEL", "2"))
        )
        tf.profiler.experimental.start(logdir, options=options)
        function(argument)[0].numpy()
        tf.profiler.experimental.stop()
        path = sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1]
        space = xplane_pb2.XSpace()
        space.ParseFromString(Path(path).read_bytes())
    totals: collections.Counter[str] = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            if line.name == "python":
                continue
            for event in line.events:
                totals[plane.event_metadata[event.metadata_id].name] += event.duration_ps / 1e6
    return sorted(((us / steps, name) for name, us in totals.items()), reverse=True)


def profile(spec: str, config: dict) -> None:
    model_name, case_name = spec.split("/")
    case = next(c for c in DEFAULT_CASES if (c.model, c.name) == (model_name, case_name))
    settings = model_entry(model_name).parse(
        {**config[model_name]["defaults"], "seed": 1, **case.changes}
    )
    batch = settings.batch_size
    model = build_model(settings, tf.random.Generator.from_seed(0))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2048, 28, 28), dtype=np.uint8)
    x_train = tf.constant(model.prepare(images))
    y_train = tf.constant(rng.integers(0, 10, 2048).astype(np.int32))
    trainable = list(model.trainable_variables)
    optimizer = make_optimizer(settings.optimizer.name, trainable, settings.optimizer.kwargs)
    optimizer.learning_rate.assign(1e-4)
    steps_fn = StepFunctions(model, optimizer, x_train, y_train, batch, tuple(x_train.shape[1:]))
    steps = 400 if model_name == "fc" else 40
    batches = rng.integers(0, 2048, size=(steps, batch)).astype(np.int32)

    def loop(body):
        @tf.function(input_signature=[tf.TensorSpec([None, batch], tf.int32)])
        def run(indices):
            n = tf.shape(indices)[0]
            out = tf.TensorArray(tf.float32, size=n)
            for i in tf.range(n):
                out = out.write(i, body(indices[i]))
            return out.stack(), out.stack()

        return run

    def forward(indices):
        return tf.reduce_sum(model(tf.gather(x_train, indices), training=True))

    def forward_backward(indices):
        labels = tf.gather(y_train, indices)
        with tf.GradientTape() as tape:
            logits = model(tf.gather(x_train, indices), training=True)
            loss = tf.reduce_mean(cross_entropy(logits, labels))
        return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, trainable)])

    def gather_only(indices):
        return tf.cast(tf.reduce_sum(tf.gather(x_train, indices)), tf.float32)

    variants = {
        "full step": steps_fn.train_chunk,
        "forward + backward, no optimizer": loop(forward_backward),
        "forward only": loop(forward),
        "loop and batch gather only": loop(gather_only),
    }
    for variant in variants.values():
        variant(batches[:2])[0].numpy()
    samples = collections.defaultdict(list)
    for _ in range(5):  # interleaved
        for name, variant in variants.items():
            start = time.perf_counter()
            variant(batches)[0].numpy()
            samples[name].append((time.perf_counter() - start) / steps * 1e6)
    threads = tf.config.threading.get_intra_op_parallelism_threads()
    print(f"== {spec}: batch {batch}, {threads} thread(s), kernels {ops.kernel_isa()}")
    for name in variants:
        print(f"  {name:34s} {np.median(samples[name]):9.1f} us/step")
    print("  profiler, full step (us/step, includes the profiler's own overhead):")
    slowest = int(os.environ.get("TOP", "25"))
    for us, name in op_times(steps_fn.train_chunk, batches, steps)[:slowest]:
        print(f"  {us:9.1f}  {name[:100]}")


if __name__ == "__main__":
    built = sorted((REPO / "build/ops").glob("*/libdynsparse_ops.so"), key=os.path.getmtime)
    if "LIB" not in os.environ and not built:
        sys.exit("no built op library under build/ops/: run `snakemake build_ops`, or set LIB=")
    ops.load_ops(os.environ.get("LIB") or str(built[-1]))
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for spec in sys.argv[1:] or ["fc/dense", "fc/sparse_0.1_0.3", "fc/sparse_0.1_0.3_b16"]:
        profile(spec, config)
