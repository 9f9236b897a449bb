"""Train one sample: the model, RigL updates, records, metrics, checkpoints and resume.

`train_sample` is the whole of the `train` stage. The ordinary training step runs inside a
`tf.function` that loops over a chunk of batches (one Python call per chunk, not per batch); the
last batch before each RigL update runs in a second `tf.function` that also returns every sparse
layer's dense gradient |Xᵀ·dY| from the native op. Both are traced once; an update assigns the new
pattern and the re-laid-out optimizer slots to the same variables, so nothing retraces.

Resume: after every epoch a checkpoint (variables, optimizer slots, dropout generator, the regrowth
generator, records and history so far) is written under `checkpoints/<settings hash>/`. A rerun
of a killed job resumes from the newest complete one and ends bitwise identical to an
uninterrupted run; the data order of epoch e is a pure function of (seed, e). A finished run
deletes its checkpoints, so a later rerun (say after a code change) starts from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from dynsparse import rigl
from dynsparse.atomic import atomic_path, save_npz, write_json
from dynsparse.records import HistoryBuilder, RecordsBuilder, SparseLayerSpec
from dynsparse.tfsetup import configure_tensorflow

# Batches per call of the training function: large enough that Python overhead vanishes, small
# enough for a lively progress bar.
CHUNK_BATCHES = 250
EVAL_BATCH = 1000
CHECKPOINT_FORMAT = 1
TRAINING_MODULES = ("rigl", "layers", "models", "train")
OUTPUT_NAMES = {"records": "records.npz", "history": "history.npz", "summary": "summary.json"}

EventHook = Callable[[str, int, int], None]


def settings_hash(model_name: str, settings: dict[str, Any]) -> str:
    """Identifies a checkpoint: the model, the settings and the training code."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {"format": CHECKPOINT_FORMAT, "model": model_name, "settings": settings},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
    )
    here = Path(__file__).resolve().parent
    for module in TRAINING_MODULES:
        digest.update((here / f"{module}.py").read_bytes())
    return digest.hexdigest()[:16]


def update_batches(batches_per_epoch: int, updates_per_epoch: int) -> list[int]:
    """0-based batch indices within an epoch after which a RigL update runs, evenly spaced."""
    if updates_per_epoch > batches_per_epoch:
        raise ValueError(
            f"{updates_per_epoch} updates per epoch need at least as many batches per epoch, "
            f"got {batches_per_epoch}"
        )
    return [(u + 1) * batches_per_epoch // updates_per_epoch - 1 for u in range(updates_per_epoch)]


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled order of the training images in `epoch`: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, 1_000_003, epoch]).permutation(n)


def training_subset(seed: int, n_total: int, train_samples: int | None) -> np.ndarray:
    if train_samples is None or train_samples >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng([seed, 2_000_003]).permutation(n_total)[:train_samples])


@dataclass
class HostState:
    """What the checkpoint holds besides TensorFlow variables."""

    epochs_done: int = 0
    step: int = 0
    updates_done: int = 0
    pruned_fraction: float = 0.0
    train_seconds: float = 0.0
    regrow_rng_state: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "epochs_done": self.epochs_done,
            "step": self.step,
            "updates_done": self.updates_done,
            "pruned_fraction": self.pruned_fraction,
            "train_seconds": self.train_seconds,
            "regrow_rng_state": self.regrow_rng_state,
        }


class _Log:
    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream if stream is not None else sys.stderr

    def __call__(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.stream.write(f"[{stamp}] {message}\n")
        self.stream.flush()


def update_layers(
    sparse_layers: list[Any],
    optimizer: Any,
    dense_grads: list[np.ndarray] | None,
    schedule_value: float,
    prune_ratio: float,
    method: str,
    regrow_rng: np.random.Generator,
) -> None:
    """One RigL update of every sparse layer, in place: pattern, values and optimizer slots."""
    for i, layer in enumerate(sparse_layers):
        rows, cols, values = layer.pattern()
        update = rigl.update_pattern(
            rows,
            cols,
            values,
            grid_shape=layer.grid_shape,
            block_size=layer.block_size,
            k=rigl.prune_count(layer.nnz, prune_ratio, schedule_value),
            method=method,
            dense_grad=None if dense_grads is None else dense_grads[i],
            rng=regrow_rng,
        )
        if update.changed:
            layer.assign_pattern(update.rows, update.cols, update.gather(values))
            optimizer.relayout(layer.values, update.gather)
        assert layer.rows.shape[0] == layer.nnz == layer.values.shape[0], "nnz changed"


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
        import tensorflow as tf

        self.traces = {"train_chunk": 0, "update_step": 0, "evaluate": 0}
        trainable = list(model.trainable_variables)
        if [v.ref() for v in trainable] != [v.ref() for v in optimizer.variables_]:
            raise ValueError("the optimizer must hold the model's trainable variables in order")
        traces = self.traces

        def loss_and_accuracy(logits: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            )
            correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels)
            return loss, tf.reduce_mean(tf.cast(correct, tf.float32))

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
                with tf.GradientTape() as tape:
                    loss, accuracy = loss_and_accuracy(model(x, training=True), y)
                optimizer.apply(tape.gradient(loss, trainable))
                losses = losses.write(i, loss)
                accuracies = accuracies.write(i, accuracy)
            return losses.stack(), accuracies.stack()

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
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y)
            return tf.reduce_sum(losses), tf.reduce_sum(tf.cast(correct, tf.int32))

        self.train_chunk = train_chunk
        self.update_step = update_step
        self.evaluate_batch = evaluate_batch


def train_sample(
    model_name: str,
    settings: dict[str, Any],
    mnist_path: str | os.PathLike[str],
    ops_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    threads: int,
    log: TextIO | None = None,
    *,
    on_event: EventHook | None = None,
) -> dict[str, Any]:
    """Train one sample and write records.npz, history.npz and summary.json into `out_dir`.

    `on_event(kind, epoch, step)` is called after every chunk ("chunk") and every checkpoint
    ("checkpoint"); tests use it to kill the process at a known point. Returns the summary.
    """
    wall_start = time.perf_counter()
    configure_tensorflow(threads)
    import tensorflow as tf
    from tqdm import tqdm

    from dynsparse import ops
    from dynsparse.layers import learning_rate as scheduled_learning_rate
    from dynsparse.layers import make_optimizer
    from dynsparse.models import build_model

    write = _Log(log)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ops.load_ops(str(Path(ops_path).resolve()))

    seed = int(settings["seed"])
    method = settings["method"]
    batch_size = int(settings["batch_size"])
    epochs = int(settings["epochs"])
    prune_ratio = float(settings["prune_ratio"])
    schedule = dict(settings["cosine_schedule"])
    key = settings_hash(model_name, settings)
    write(f"training {model_name} {out.name}: settings hash {key}, {threads} thread(s)")
    write("settings " + json.dumps(settings, sort_keys=True))

    # --- data ---------------------------------------------------------------------------------
    with np.load(mnist_path, allow_pickle=False) as data:
        x_train_all, y_train_all = data["x_train"], data["y_train"]
        x_test_raw, y_test = data["x_test"], data["y_test"]
    subset = training_subset(seed, len(x_train_all), settings.get("train_samples"))

    # --- model, optimizer, generators ---------------------------------------------------------
    dropout_rng = tf.random.Generator.from_seed(seed)
    model = build_model(model_name, settings, dropout_rng)
    x_train = tf.constant(model.prepare(x_train_all[subset]))
    y_train = tf.constant(y_train_all[subset].astype(np.int32))
    x_test = model.prepare(x_test_raw)
    y_test = y_test.astype(np.int32)
    n_train = int(x_train.shape[0])
    batches_per_epoch = n_train // batch_size
    if batches_per_epoch < 1:
        raise ValueError(f"{n_train} training images do not fill one batch of {batch_size}")
    updates_per_epoch = int(settings["updates_per_epoch"])
    update_points = update_batches(batches_per_epoch, updates_per_epoch)
    total_updates = updates_per_epoch * epochs

    trainable = list(model.trainable_variables)
    optimizer = make_optimizer(settings["optimizer"], trainable, dict(settings["optimizer_args"]))
    sparse_layers = model.sparse_layers
    dynamic = method != "static" and bool(sparse_layers)
    needs_dense_grad = method == "rigl" and bool(sparse_layers)
    regrow_rng = np.random.default_rng([seed, 3_000_017])
    host = HostState(regrow_rng_state=regrow_rng.bit_generator.state)

    records = RecordsBuilder(
        model=model_name,
        layers=[
            SparseLayerSpec(
                name=layer.layer_name,
                shape=(layer.n_in, layer.n_out),
                block_size=layer.block_size,
                nnz=layer.nnz,
            )
            for layer in sparse_layers
        ],
        n_updates=total_updates,
        extra=model.record_extras(),
    )
    history = HistoryBuilder()

    # --- the compiled functions ---------------------------------------------------------------
    steps = StepFunctions(model, optimizer, x_train, y_train, batch_size, x_test.shape[1:])
    train_chunk, update_step, evaluate_batch = (
        steps.train_chunk,
        steps.update_step,
        steps.evaluate_batch,
    )
    traces = steps.traces

    def evaluate() -> tuple[float, float]:
        total_loss = 0.0
        total_correct = 0
        for start in range(0, len(x_test), EVAL_BATCH):
            loss_sum, correct = evaluate_batch(
                x_test[start : start + EVAL_BATCH], y_test[start : start + EVAL_BATCH]
            )
            total_loss += float(loss_sum)
            total_correct += int(correct)
        return total_loss / len(x_test), total_correct / len(x_test)

    # --- checkpoints --------------------------------------------------------------------------
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, dropout_rng=dropout_rng)
    checkpoint_root = out / "checkpoints"
    checkpoint_dir = checkpoint_root / key
    if checkpoint_root.exists():
        for stale in checkpoint_root.iterdir():
            if stale.name != key:
                shutil.rmtree(stale, ignore_errors=True)

    # Records grow by a few per epoch and are large: each checkpoint adds one chunk file of the
    # epoch's new records (uncompressed, fast) rather than rewriting them all.
    def records_chunk(epoch_number: int) -> Path:
        return checkpoint_dir / f"records-{epoch_number:04d}.npz"

    def save_checkpoint(records_before: int) -> None:
        epoch_dir = checkpoint_dir / f"epoch-{host.epochs_done:04d}"
        if epoch_dir.exists():
            shutil.rmtree(epoch_dir)
        epoch_dir.mkdir(parents=True)
        with atomic_path(records_chunk(host.epochs_done), suffix=".npz") as tmp:
            np.savez(tmp, **records.arrays(start=records_before))
        checkpoint.write(str(epoch_dir / "variables"))
        with atomic_path(epoch_dir / "history.npz", suffix=".npz") as tmp:
            np.savez(tmp, **history.arrays())
        # Written last: its presence marks the checkpoint complete.
        write_json(epoch_dir / "state.json", {**host.to_json(), "records": len(records)})
        for older in checkpoint_dir.glob("epoch-*"):
            if older != epoch_dir:
                shutil.rmtree(older, ignore_errors=True)

    def latest_checkpoint() -> Path | None:
        complete = sorted(p for p in checkpoint_dir.glob("epoch-*") if (p / "state.json").exists())
        return complete[-1] if complete else None

    resumed_from: int | None = None
    found = latest_checkpoint() if checkpoint_dir.exists() else None
    if found is not None:
        state = json.loads((found / "state.json").read_text())
        n_records = state.pop("records")
        for epoch_number in range(1, state["epochs_done"] + 1):
            with np.load(records_chunk(epoch_number), allow_pickle=False) as saved:
                records.extend(saved)
        if len(records) != n_records:
            raise RuntimeError(f"checkpoint {found}: {len(records)} records, expected {n_records}")
        with np.load(found / "history.npz", allow_pickle=False) as saved:
            history = HistoryBuilder.from_arrays(saved)
        checkpoint.read(str(found / "variables")).assert_existing_objects_matched()
        host = HostState(**state)
        regrow_rng.bit_generator.state = host.regrow_rng_state
        resumed_from = host.epochs_done
        write(f"resumed from the checkpoint after epoch {host.epochs_done}")
    else:
        records.add(0, 0, {layer.layer_name: layer.pattern() for layer in sparse_layers})

    # --- TensorBoard --------------------------------------------------------------------------
    board = tf.summary.create_file_writer(str(out / "tensorboard"))
    # tensorflow-cpu ships without the tensorboard package that tf.summary.scalar needs; write the
    # same scalar events (scalars plugin metadata) with the core summary op instead.
    from tensorflow.core.framework import summary_pb2

    scalar_metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR,
    )

    def board_scalars(step: int, values: dict[str, float]) -> None:
        with board.as_default(step=step):
            for name, value in values.items():
                tf.summary.write(name, tf.constant(value, tf.float32), metadata=scalar_metadata)

    def density_scalars() -> dict[str, float]:
        values: dict[str, float] = {}
        for layer in sparse_layers:
            weights = layer.values.numpy()
            values[f"density/{layer.layer_name}"] = (
                layer.nnz * layer.block_size**2 / (layer.n_in * layer.n_out)
            )
            values[f"nonzero_fraction/{layer.layer_name}"] = float(np.count_nonzero(weights)) / (
                layer.n_in * layer.n_out
            )
        return values

    # --- the RigL update ----------------------------------------------------------------------
    def rigl_update(dense_grads: list[np.ndarray] | None) -> None:
        host.updates_done += 1
        t = host.updates_done
        fraction = rigl.cosine_schedule(t, total_updates, **schedule)
        host.pruned_fraction = prune_ratio * fraction if dynamic else 0.0
        if dynamic:
            update_layers(
                sparse_layers, optimizer, dense_grads, fraction, prune_ratio, method, regrow_rng
            )
        host.regrow_rng_state = regrow_rng.bit_generator.state
        records.add(t, host.step, {layer.layer_name: layer.pattern() for layer in sparse_layers})
        board_scalars(host.step, {"pruned_fraction": host.pruned_fraction, **density_scalars()})

    # --- the epochs ---------------------------------------------------------------------------
    nnz_before = {layer.layer_name: layer.nnz for layer in sparse_layers}
    write(
        f"{n_train} training images, {batches_per_epoch} batches of {batch_size} per epoch, "
        f"{epochs} epochs, {total_updates} RigL updates ({method}); sparse layers: "
        + (", ".join(f"{name} {nnz} blocks" for name, nnz in nnz_before.items()) or "none")
    )
    for epoch in range(host.epochs_done, epochs):
        lr = scheduled_learning_rate(
            model_name,
            settings["optimizer"],
            settings["learning_rate"],
            epoch,
            epochs,
            batch_size,
        )
        optimizer.learning_rate.assign(lr)
        order = epoch_order(seed, epoch, n_train).astype(np.int32)
        batches = order[: batches_per_epoch * batch_size].reshape(batches_per_epoch, batch_size)
        records_at_epoch_start = 0 if epoch == 0 else len(records)
        epoch_seconds = 0.0
        running_loss = running_accuracy = 0.0
        bar = tqdm(
            total=batches_per_epoch,
            desc=f"epoch {epoch + 1}/{epochs}",
            file=write.stream,
            mininterval=2.0,
            ascii=True,
            dynamic_ncols=False,
            ncols=100,
        )
        start = 0
        for update_at in update_points:
            # Ordinary batches up to the update; the batch *at* the update is the update step.
            segment_end = update_at if needs_dense_grad else update_at + 1
            for chunk_start in range(start, segment_end, CHUNK_BATCHES):
                chunk_end = min(chunk_start + CHUNK_BATCHES, segment_end)
                t0 = time.perf_counter()
                losses, accuracies = train_chunk(batches[chunk_start:chunk_end])
                losses, accuracies = losses.numpy(), accuracies.numpy()
                seconds = time.perf_counter() - t0
                epoch_seconds += seconds
                n = chunk_end - chunk_start
                history.add_steps(
                    step=host.step + 1 + np.arange(n),
                    epoch=np.full(n, epoch),
                    loss=losses,
                    accuracy=accuracies,
                    learning_rate=np.full(n, lr),
                    pruned_fraction=np.full(n, host.pruned_fraction),
                    step_time=np.full(n, seconds / n),
                )
                host.step += n
                running_loss += float(losses.sum())
                running_accuracy += float(accuracies.sum())
                bar.update(n)
                done = chunk_end
                bar.set_postfix(
                    loss=f"{running_loss / done:.4f}", acc=f"{running_accuracy / done:.4f}"
                )
                board_scalars(
                    host.step,
                    {
                        "train/loss": float(losses.mean()),
                        "train/accuracy": float(accuracies.mean()),
                        "learning_rate": lr,
                    },
                )
                if on_event is not None:
                    on_event("chunk", epoch, host.step)
            t0 = time.perf_counter()
            dense_grads: list[np.ndarray] | None = None
            if needs_dense_grad:
                loss, accuracy, dense = update_step(batches[update_at])
                dense_grads = [g.numpy() for g in dense]
                loss_value, accuracy_value = float(loss), float(accuracy)
                step_seconds = time.perf_counter() - t0
                history.add_steps(
                    step=[host.step + 1],
                    epoch=[epoch],
                    loss=[loss_value],
                    accuracy=[accuracy_value],
                    learning_rate=[lr],
                    pruned_fraction=[host.pruned_fraction],
                    step_time=[step_seconds],
                )
                host.step += 1
                running_loss += loss_value
                running_accuracy += accuracy_value
                bar.update(1)
            rigl_update(dense_grads)
            epoch_seconds += time.perf_counter() - t0
            start = update_at + 1
        bar.close()

        test_loss, test_accuracy = evaluate()
        host.epochs_done = epoch + 1
        host.train_seconds += epoch_seconds
        history.add_epoch(
            epoch_index=epoch,
            test_loss=test_loss,
            test_accuracy=test_accuracy,
            train_seconds=epoch_seconds,
        )
        board_scalars(host.step, {"test/loss": test_loss, "test/accuracy": test_accuracy})
        board.flush()
        write(
            f"epoch {epoch + 1}/{epochs}: train loss {running_loss / batches_per_epoch:.4f}, "
            f"train accuracy {running_accuracy / batches_per_epoch:.4f}, "
            f"test loss {test_loss:.4f}, test accuracy {test_accuracy:.4f}, "
            f"{epoch_seconds:.1f} s ({batches_per_epoch * batch_size / epoch_seconds:.0f} "
            "samples/s)"
        )
        save_checkpoint(records_at_epoch_start)
        if on_event is not None:
            on_event("checkpoint", epoch, host.step)

    # --- checks and outputs -------------------------------------------------------------------
    for layer in sparse_layers:
        assert layer.nnz == nnz_before[layer.layer_name]
        assert len(layer.rows.numpy()) == layer.nnz and layer.values.shape[0] == layer.nnz
    for name, count in traces.items():
        assert count <= 1, f"{name} was traced {count} times"
    board.close()

    history_arrays = history.arrays()
    test_accuracies = history_arrays["test_accuracy"]
    best_epoch = int(np.argmax(test_accuracies))
    samples_seen = epochs * batches_per_epoch * batch_size
    parameters = {layer.layer_name: int(layer.parameter_count) for layer in model.layers}
    total_parameters = sum(int(np.prod(v.shape)) for v in trainable)

    summary: dict[str, Any] = {
        "model": model_name,
        "sample": out.name,
        "settings": settings,
        "seed": seed,
        "settings_hash": key,
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
        },
        "threads": threads,
        "resumed_from_epoch": resumed_from,
        "train_images": n_train,
        "batches_per_epoch": batches_per_epoch,
        "n_updates": total_updates,
        "wall_seconds": time.perf_counter() - wall_start,
        "train_seconds": host.train_seconds,
        "throughput_samples_per_second": samples_seen / host.train_seconds,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "nonzero_blocks": {layer.layer_name: layer.nnz for layer in sparse_layers},
        "block_sizes": {layer.layer_name: layer.block_size for layer in sparse_layers},
        # Trainable values: a sparse layer counts its nnz·bs² block values (+ bias); "other" is
        # the norms' gamma and beta.
        "parameters": {**parameters, "other": total_parameters - sum(parameters.values())},
        "total_parameters": total_parameters,
        "nonzero_weights": {
            layer.layer_name: int(np.count_nonzero(layer.values.numpy())) for layer in sparse_layers
        },
        "final_test_accuracy": float(test_accuracies[-1]),
        "final_test_loss": float(history_arrays["test_loss"][-1]),
        "best_test_accuracy": float(test_accuracies[best_epoch]),
        "best_epoch": best_epoch,
        "traces": traces,
    }
    records.save(out / OUTPUT_NAMES["records"])
    save_npz(out / OUTPUT_NAMES["history"], **history_arrays)
    write_json(out / OUTPUT_NAMES["summary"], summary)
    shutil.rmtree(checkpoint_root, ignore_errors=True)
    write(
        f"done: final test accuracy {summary['final_test_accuracy']:.4f}, "
        f"train {host.train_seconds:.1f} s, {summary['throughput_samples_per_second']:.0f} "
        f"samples/s, wall {summary['wall_seconds']:.1f} s"
    )
    return summary
