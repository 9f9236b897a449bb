"""Train one sample: the model, its updates, records, metrics, checkpoints and resume.

`train_sample` is the whole of the `train` stage. Its parts: the compiled step functions
(dynsparse.steps), the method's pattern updates (dynsparse.methods), the checkpoint store
(dynsparse.checkpoint), TensorBoard scalars (dynsparse.board) and the record builders
(dynsparse.records).

Resume: after every epoch a checkpoint is written; a rerun of a killed job resumes from the newest
complete one and ends bitwise identical to an uninterrupted run, since the data order of epoch e
is a pure function of (seed, e). A finished run deletes its checkpoints, so a later rerun (say
after a code change) starts from scratch. The log of a resumed run holds the earlier attempts'
lines first (kept beside the checkpoints), then a separator.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from dynsparse import rigl
from dynsparse.atomic import save_npz, write_json
from dynsparse.checkpoint import CheckpointStore, HostState, settings_hash
from dynsparse.gmp import GmpPruner, gmp_steps
from dynsparse.methods import Method, method_of, update_layers
from dynsparse.records import HistoryBuilder, RecordsBuilder, SparseLayerSpec
from dynsparse.registry import ModelEntry, entry_of
from dynsparse.settings import ModelSettings
from dynsparse.splits import validation_split
from dynsparse.tfsetup import configure_tensorflow

# Batches per call of the training function: large enough that Python overhead vanishes, small
# enough for a lively progress bar.
CHUNK_BATCHES = 250
EVAL_BATCH = 1000
OUTPUT_NAMES = {"records": "records.npz", "history": "history.npz", "summary": "summary.json"}

EventHook = Callable[[str, int, int], None]


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


def train_and_validation_indices(
    labels: np.ndarray, n_validation: int, seed: int, train_samples: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the training images: the seed's training subset and the fixed, stratified
    validation set (the same for every sample and seed; empty for `n_validation = 0`)."""
    split = validation_split(len(labels), n_validation, labels=labels)
    subset = training_subset(seed, len(split.train), train_samples)
    return split.train[subset], split.validation


class RunLog:
    """Time-stamped lines to the job's log, also kept beside the checkpoints for a resume."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.keep: Path | None = None

    def replay_attempts(self, attempts: Path, resumed_after: int | None) -> None:
        """Re-emit the earlier attempts' lines (if resuming) and keep this attempt's from now."""
        if resumed_after is not None and attempts.exists():
            self.stream.write(attempts.read_text())
            self.stream.write(f"{'=' * 30} resumed after epoch {resumed_after} {'=' * 30}\n")
        attempts.parent.mkdir(parents=True, exist_ok=True)
        if resumed_after is None:
            attempts.write_text("")
        self.keep = attempts

    def __call__(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}\n"
        self.stream.write(line)
        self.stream.flush()
        if self.keep is not None:
            with open(self.keep, "a") as kept:
                kept.write(line)


@dataclass
class Data:
    x_train: Any  # tf.Tensor, prepared for the model
    y_train: Any
    x_validation: np.ndarray  # held out of the training images; may be empty
    y_validation: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_validation(self) -> int:
        return len(self.y_validation)


@dataclass(frozen=True)
class Evaluation:
    """One epoch's held-out metrics; validation is NaN when nothing is held out."""

    validation_loss: float
    validation_accuracy: float
    test_loss: float
    test_accuracy: float


def load_data(path: str | os.PathLike[str], settings: ModelSettings, model: Any) -> Data:
    import tensorflow as tf

    with np.load(path, allow_pickle=False) as data:
        x_train_all, y_train_all = data["x_train"], data["y_train"]
        x_test_raw, y_test = data["x_test"], data["y_test"]
    train, validation = train_and_validation_indices(
        y_train_all, settings.validation, settings.seed, settings.train_samples
    )
    return Data(
        x_train=tf.constant(model.prepare(x_train_all[train])),
        y_train=tf.constant(y_train_all[train].astype(np.int32)),
        x_validation=model.prepare(x_train_all[validation]),
        y_validation=y_train_all[validation].astype(np.int32),
        x_test=model.prepare(x_test_raw),
        y_test=y_test.astype(np.int32),
    )


class Trainer:
    """One sample's run: the model, optimizer, generators, records, history and host state."""

    def __init__(self, settings: ModelSettings, mnist_path: Any, out: Path, log: RunLog) -> None:
        import tensorflow as tf

        from dynsparse.layers import make_optimizer
        from dynsparse.models import build_model
        from dynsparse.momentum import MomentumStepFunctions
        from dynsparse.steps import StepFunctions

        self.settings, self.out, self.log = settings, out, log
        self.entry: ModelEntry[Any] = entry_of(settings)
        self.dropout_rng = tf.random.Generator.from_seed(settings.seed)
        self.model = build_model(settings, self.dropout_rng)
        self.data = load_data(mnist_path, settings, self.model)
        self.batches_per_epoch = self.data.n_train // settings.batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"{self.data.n_train} training images do not fill one batch of "
                f"{settings.batch_size}"
            )
        self.update_points = update_batches(self.batches_per_epoch, settings.rigl.updates_per_epoch)
        self.total_updates = settings.rigl.updates_per_epoch * settings.epochs
        # Updates after the first `changing_updates` keep the pattern (RigL's T_end).
        self.changing_updates = frozen_after(self.total_updates, settings.rigl.update_end)
        check_grow_batches(self.update_points, settings.rigl.grow_batches)
        self.trainable = list(self.model.trainable_variables)
        self.optimizer = make_optimizer(
            settings.optimizer.name, self.trainable, settings.optimizer.kwargs
        )
        self.sparse_layers = self.model.sparse_layers
        self.method: Method = method_of(settings.rigl.method, bool(self.sparse_layers))
        if self.method.prunes_at_init:
            self.prune_at_init()
        # Before the records and the restore: the pruner keeps each layer's full starting grid.
        self.pruner = self.make_pruner()
        self.regrow_rng = np.random.default_rng([settings.seed, 3_000_017])
        self.host = HostState(regrow_rng_state=dict(self.regrow_rng.bit_generator.state))
        self.records = RecordsBuilder(
            model=settings.model,
            layers=[
                SparseLayerSpec(
                    name=layer.layer_name,
                    shape=(layer.n_in, layer.n_out),
                    block_size=layer.block_size,
                    nnz=layer.nnz,
                )
                for layer in self.sparse_layers
            ],
            n_updates=self.total_updates,
            extra=self.model.record_extras(),
        )
        self.history = HistoryBuilder()
        steps_class = MomentumStepFunctions if self.method.grad_every_step else StepFunctions
        self.steps = steps_class(
            self.model,
            self.optimizer,
            self.data.x_train,
            self.data.y_train,
            settings.batch_size,
            self.data.x_test.shape[1:],
        )
        self.gradient_averages: list[Any] = getattr(self.steps, "averages", [])
        self.key = settings_hash(settings)
        averages = {"gradient_averages": self.gradient_averages} if self.gradient_averages else {}
        variables = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, dropout_rng=self.dropout_rng, **averages
        )
        self.store = CheckpointStore(out, self.key, variables)
        self.nnz = {layer.layer_name: layer.nnz for layer in self.sparse_layers}

    def prune_at_init(self) -> None:
        """SNIP: the pattern from a dense twin's |w·g| on the first batch of epoch 0."""
        import tensorflow as tf

        from dynsparse.models import build_model
        from dynsparse.snip import prune_at_init

        settings = self.settings
        twin = build_model(
            self.entry.dense_settings(settings), tf.random.Generator.from_seed(settings.seed)
        )
        first = epoch_order(settings.seed, 0, self.data.n_train)[: settings.batch_size]
        indices = tf.constant(first.astype(np.int32))
        x, y = tf.gather(self.data.x_train, indices), tf.gather(self.data.y_train, indices)
        prune_at_init(self.sparse_layers, twin, x, y)

    def make_pruner(self) -> GmpPruner | None:
        """GMP's pruner, for a method that prunes gradually (else None)."""
        if not self.method.prunes_gradually:
            return None
        settings = self.settings
        total_steps = settings.epochs * self.batches_per_epoch
        targets = {
            layer.layer_name: self.entry.target_density(settings, layer.layer_name)
            for layer in self.sparse_layers
        }
        steps = gmp_steps(settings.rigl.gmp_or_default, total_steps)
        return GmpPruner(self.sparse_layers, targets, steps)

    def next_pruning_step(self) -> int | None:
        """The next training step after which the pruner prunes (None: no more)."""
        return None if self.pruner is None else self.pruner.next_pruning_step(self.host.step)

    def prune_if_due(self) -> dict[str, float] | None:
        """GMP: prune after `host.step` steps if that is a pruning step; the new densities."""
        if self.pruner is None or not self.pruner.prune(self.host.step, self.optimizer):
            return None
        return self.density_scalars()

    def expected_blocks(self) -> dict[str, int]:
        """The blocks each sparse layer holds at the end of the run."""
        return self.nnz if self.pruner is None else self.pruner.final_blocks()

    def patterns(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if self.pruner is not None:
            pruner = self.pruner
            return {
                layer.layer_name: pruner.recorded_pattern(layer) for layer in self.sparse_layers
            }
        return {layer.layer_name: layer.pattern() for layer in self.sparse_layers}

    def restore(self) -> int | None:
        """Resume from the latest checkpoint (its epoch count) or record the initial pattern."""
        restored = self.store.restore(self.records)
        if restored is None:
            self.records.add(0, 0, self.patterns())
            return None
        self.host, self.history = restored.host, restored.history
        self.regrow_rng.bit_generator.state = self.host.regrow_rng_state
        return self.host.epochs_done

    def evaluate_on(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Mean loss and accuracy over `x`, `y` (NaN for none)."""
        if len(y) == 0:
            return math.nan, math.nan
        total_loss, total_correct = 0.0, 0
        for start in range(0, len(y), EVAL_BATCH):
            loss_sum, correct = self.steps.evaluate_batch(
                x[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]
            )
            total_loss += float(loss_sum)
            total_correct += int(correct)
        return total_loss / len(y), total_correct / len(y)

    def evaluate(self) -> Evaluation:
        """Validation and test metrics of the model as it is now."""
        data = self.data
        validation = self.evaluate_on(data.x_validation, data.y_validation)
        test = self.evaluate_on(data.x_test, data.y_test)
        return Evaluation(*validation, *test)

    def changes_pattern(self, update_number: int) -> bool:
        """Whether update `update_number` (1-based) changes the pattern (after update_end: no)."""
        return self.method.updates and update_number <= self.changing_updates

    def needs_dense_grad(self, update_number: int) -> bool:
        """Whether update `update_number` needs update steps (SNFS has its average already)."""
        method = self.method
        return (
            method.needs_dense_grad
            and not method.grad_every_step
            and self.changes_pattern(update_number)
        )

    def update(self, dense_grads: list[np.ndarray] | None) -> dict[str, float]:
        """The method's update of every sparse layer after `host.step` batches; record it."""
        host, rigl_settings = self.host, self.settings.rigl
        host.updates_done += 1
        changes = self.changes_pattern(host.updates_done)
        fraction = 0.0
        if changes:
            schedule = rigl_settings.schedule
            fraction = rigl.cosine_schedule(
                host.updates_done,
                self.changing_updates,
                zero_steps=schedule.zero_steps,
                phase_delay=schedule.phase_delay,
                period=schedule.period,
            )
        host.pruned_fraction = rigl_settings.prune_ratio * fraction if changes else 0.0
        if changes and self.method.grad_every_step:
            dense_grads = [np.abs(average.numpy()) for average in self.gradient_averages]
        if changes:
            update_layers(
                self.sparse_layers,
                self.optimizer,
                dense_grads,
                fraction,
                rigl_settings.prune_ratio,
                self.method,
                self.regrow_rng,
                regrow_dropped=rigl_settings.regrow_dropped,
            )
        host.regrow_rng_state = dict(self.regrow_rng.bit_generator.state)
        self.records.add(host.updates_done, host.step, self.patterns())
        return {"pruned_fraction": host.pruned_fraction, **self.density_scalars()}

    def density_scalars(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for layer in self.sparse_layers:
            n_weights = layer.n_in * layer.n_out
            values[f"density/{layer.layer_name}"] = layer.nnz * layer.block_size**2 / n_weights
            values[f"nonzero_fraction/{layer.layer_name}"] = (
                float(np.count_nonzero(layer.values.numpy())) / n_weights
            )
        return values


class EpochRun:
    """One epoch's batches: ordinary chunks, then the update step and update at each point."""

    def __init__(self, trainer: Trainer, board: Any, epoch: int, on_event: EventHook | None):
        from tqdm import tqdm

        self.trainer, self.board, self.epoch, self.on_event = trainer, board, epoch, on_event
        settings = trainer.settings
        self.lr = trainer.entry.learning_rate(settings, epoch)
        trainer.optimizer.learning_rate.assign(self.lr)
        n_train, per_epoch = trainer.data.n_train, trainer.batches_per_epoch
        order = epoch_order(settings.seed, epoch, n_train).astype(np.int32)
        self.batches = order[: per_epoch * settings.batch_size].reshape(
            per_epoch, settings.batch_size
        )
        self.seconds = 0.0
        self.loss_sum = self.accuracy_sum = 0.0
        self.bar = tqdm(
            total=per_epoch,
            desc=f"epoch {epoch + 1}/{settings.epochs}",
            file=trainer.log.stream,
            mininterval=2.0,
            ascii=True,
            dynamic_ncols=False,
            ncols=100,
        )

    def add_steps(self, losses: np.ndarray, accuracies: np.ndarray, seconds: float) -> None:
        """History rows for the batches just run (step_time: the mean over them)."""
        host, n = self.trainer.host, len(losses)
        self.trainer.history.add_steps(
            step=host.step + 1 + np.arange(n),
            epoch=np.full(n, self.epoch),
            loss=losses,
            accuracy=accuracies,
            learning_rate=np.full(n, self.lr),
            pruned_fraction=np.full(n, host.pruned_fraction),
            step_time=np.full(n, seconds / n),
        )
        host.step += n
        self.loss_sum += float(losses.sum())
        self.accuracy_sum += float(accuracies.sum())
        self.bar.update(n)

    def chunks(self, start: int, end: int) -> None:
        """Ordinary training steps on batches [start, end), CHUNK_BATCHES per call; a chunk also
        ends at a pruning step (GMP), after which the pruner runs."""
        chunk_start = start
        while chunk_start < end:
            chunk_end = min(chunk_start + CHUNK_BATCHES, end)
            pruning_step = self.trainer.next_pruning_step()
            if pruning_step is not None:
                chunk_end = min(chunk_end, chunk_start + pruning_step - self.trainer.host.step)
            t0 = time.perf_counter()
            losses, accuracies = self.trainer.steps.train_chunk(self.batches[chunk_start:chunk_end])
            losses, accuracies = losses.numpy(), accuracies.numpy()
            seconds = time.perf_counter() - t0
            self.seconds += seconds
            self.add_steps(losses, accuracies, seconds)
            self.bar.set_postfix(
                loss=f"{self.loss_sum / chunk_end:.4f}", acc=f"{self.accuracy_sum / chunk_end:.4f}"
            )
            self.board.scalars(
                self.trainer.host.step,
                {
                    "train/loss": float(losses.mean()),
                    "train/accuracy": float(accuracies.mean()),
                    "learning_rate": self.lr,
                },
            )
            pruned = self.trainer.prune_if_due()
            if pruned is not None:
                self.board.scalars(self.trainer.host.step, pruned)
            if self.on_event is not None:
                self.on_event("chunk", self.epoch, self.trainer.host.step)
            chunk_start = chunk_end

    def grad_batches(self) -> int:
        """How many batches before the next update run as update steps (0: none)."""
        trainer = self.trainer
        if not trainer.needs_dense_grad(trainer.host.updates_done + 1):
            return 0
        return trainer.settings.rigl.grow_batches

    def update_at(self, batch: int, n_grad_batches: int) -> None:
        """The update after `batch`; batches (batch − n, batch] are update steps whose dense
        gradients, averaged, score the regrowth (rigl-torch's `grad_accumulation_n`)."""
        trainer = self.trainer
        t0 = time.perf_counter()
        dense_grads: list[np.ndarray] | None = None
        for grad_batch in range(batch - n_grad_batches + 1, batch + 1):
            t_step = time.perf_counter()
            loss, accuracy, dense = trainer.steps.update_step(self.batches[grad_batch])
            grads = [g.numpy() for g in dense]
            dense_grads = grads if dense_grads is None else accumulate(dense_grads, grads)
            self.add_steps(
                np.array([float(loss)]), np.array([float(accuracy)]), time.perf_counter() - t_step
            )
        if dense_grads is not None and n_grad_batches > 1:
            dense_grads = [g / n_grad_batches for g in dense_grads]
        self.board.scalars(trainer.host.step, trainer.update(dense_grads))
        self.seconds += time.perf_counter() - t0

    def run(self) -> Evaluation:
        """The epoch's batches and updates; the model is evaluated just before the epoch's last
        update, so that no method is measured right after pruning and zero-regrowing (and every
        method at the same point)."""
        start = 0
        evaluation: Evaluation | None = None
        last = len(self.trainer.update_points) - 1
        for index, batch in enumerate(self.trainer.update_points):
            n_grad_batches = self.grad_batches()
            self.chunks(start, batch + 1 - n_grad_batches)
            if index == last:
                evaluation = self.trainer.evaluate()
            self.update_at(batch, n_grad_batches)
            start = batch + 1
        self.bar.close()
        assert evaluation is not None  # update_points is never empty
        return evaluation


def accumulate(total: list[np.ndarray], grads: list[np.ndarray]) -> list[np.ndarray]:
    """Layer-wise sums of dense gradients, in float64 (N batches of float32 would round)."""
    return [np.asarray(t, dtype=np.float64) + g for t, g in zip(total, grads, strict=True)]


def frozen_after(total_updates: int, update_end: float) -> int:
    """The number of updates that change the pattern: ⌊update_end · total⌋ (at least one)."""
    if not 0.0 < update_end <= 1.0:
        raise ValueError(f"update_end {update_end} must be in (0, 1]")
    return max(1, int(np.floor(update_end * total_updates + 1e-9)))


def check_grow_batches(update_points: list[int], grow_batches: int) -> None:
    """Each update's N gradient batches must lie after the previous update."""
    gaps = np.diff([-1, *update_points])
    if grow_batches < 1 or (len(gaps) and grow_batches > int(gaps.min())):
        raise ValueError(
            f"grow_batches {grow_batches} must be between 1 and the {int(gaps.min())} batches "
            "between two updates; lower grow_batches or updates_per_epoch"
        )


def train_sample(
    settings: ModelSettings,
    mnist_path: str | os.PathLike[str],
    ops_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    threads: int,
    log: TextIO | None = None,
    *,
    on_event: EventHook | None = None,
    sample: str | None = None,
) -> dict[str, Any]:
    """Train one sample and write records.npz, history.npz and summary.json into `out_dir`.

    `sample` names the sample in summary.json (default: the folder's name).

    `on_event(kind, epoch, step)` is called after every chunk ("chunk") and every checkpoint
    ("checkpoint"); tests use it to kill the process at a known point. Returns the summary.
    """
    wall_start = time.perf_counter()
    configure_tensorflow(threads)
    from dynsparse import ops
    from dynsparse.board import Board

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ops.load_ops(str(Path(ops_path).resolve()))
    write = RunLog(log)
    trainer = Trainer(settings, mnist_path, out, write)
    resumed_from = trainer.restore()
    write.replay_attempts(trainer.store.attempts_log, resumed_from)
    write(f"training {settings.model} {out.name}: settings hash {trainer.key}, {threads} thread(s)")
    write("settings " + json.dumps(settings.to_dict(), sort_keys=True))
    if resumed_from is not None:
        write(f"resumed from the checkpoint after epoch {resumed_from}")
    board = Board(out / "tensorboard", None if resumed_from is None else trainer.host.step)
    write(describe(trainer))

    host = trainer.host
    for epoch in range(host.epochs_done, settings.epochs):
        records_at_epoch_start = 0 if epoch == 0 else len(trainer.records)
        run = EpochRun(trainer, board, epoch, on_event)
        evaluation = run.run()
        host.epochs_done = epoch + 1
        host.train_seconds += run.seconds
        per_epoch = trainer.batches_per_epoch
        train_loss, train_accuracy = run.loss_sum / per_epoch, run.accuracy_sum / per_epoch
        trainer.history.add_epoch(
            epoch_index=epoch,
            train_loss=train_loss,
            train_accuracy=train_accuracy,
            **dataclasses.asdict(evaluation),
            train_seconds=run.seconds,
        )
        board.scalars(host.step, epoch_scalars(train_loss, train_accuracy, evaluation))
        board.flush()
        write(
            f"epoch {epoch + 1}/{settings.epochs}: train loss {train_loss:.4f}, "
            f"train accuracy {train_accuracy:.4f}, "
            f"validation loss {evaluation.validation_loss:.4f}, "
            f"validation accuracy {evaluation.validation_accuracy:.4f}, "
            f"test loss {evaluation.test_loss:.4f}, test accuracy {evaluation.test_accuracy:.4f}, "
            f"{run.seconds:.1f} s ({per_epoch * settings.batch_size / run.seconds:.0f} samples/s)"
        )
        trainer.store.save(host, trainer.records, records_at_epoch_start, trainer.history)
        if on_event is not None:
            on_event("checkpoint", epoch, host.step)
    board.close()

    check_invariants(trainer)
    summary = make_summary(
        trainer, threads, resumed_from, time.perf_counter() - wall_start, sample or out.name
    )
    trainer.records.save(out / OUTPUT_NAMES["records"])
    save_npz(out / OUTPUT_NAMES["history"], **trainer.history.arrays())
    write_json(out / OUTPUT_NAMES["summary"], summary)
    write.keep = None  # the kept lines go with the checkpoints
    trainer.store.clear()
    write(
        f"done: final test accuracy {summary['final_test_accuracy']:.4f}, "
        f"train {host.train_seconds:.1f} s, {summary['throughput_samples_per_second']:.0f} "
        f"samples/s, wall {summary['wall_seconds']:.1f} s"
    )
    return summary


def epoch_scalars(
    train_loss: float, train_accuracy: float, evaluation: Evaluation
) -> dict[str, float]:
    """TensorBoard's per-epoch scalars (validation left out when nothing is held out)."""
    scalars = {
        "epoch/train_loss": train_loss,
        "epoch/train_accuracy": train_accuracy,
        "test/loss": evaluation.test_loss,
        "test/accuracy": evaluation.test_accuracy,
    }
    if not math.isnan(evaluation.validation_accuracy):
        scalars["validation/loss"] = evaluation.validation_loss
        scalars["validation/accuracy"] = evaluation.validation_accuracy
    return scalars


def best_epoch_by_validation(validation_accuracy: np.ndarray) -> int | None:
    """The epoch with the highest validation accuracy (the first of ties); None without one."""
    if len(validation_accuracy) == 0 or np.all(np.isnan(validation_accuracy)):
        return None
    return int(np.nanargmax(validation_accuracy))


def describe(trainer: Trainer) -> str:
    settings = trainer.settings
    layers = ", ".join(f"{name} {nnz} blocks" for name, nnz in trainer.nnz.items()) or "none"
    return (
        f"{trainer.data.n_train} training images ({trainer.data.n_validation} held out for "
        f"validation), {trainer.batches_per_epoch} batches of "
        f"{settings.batch_size} per epoch, {settings.epochs} epochs, {trainer.total_updates} RigL "
        f"updates ({settings.rigl.method}); sparse layers: {layers}{pruning_plan(trainer)}"
    )


def pruning_plan(trainer: Trainer) -> str:
    """GMP's pruning steps and final block counts, for the log ('' for other methods)."""
    if trainer.pruner is None:
        return ""
    steps = trainer.pruner.steps
    final = ", ".join(f"{name} {n}" for name, n in trainer.pruner.final_blocks().items())
    return (
        f"; GMP prunes after steps {steps.start_step}, {steps.start_step + steps.every}, ..., "
        f"{steps.end_step} down to {final} blocks"
    )


def check_invariants(trainer: Trainer) -> None:
    expected = trainer.expected_blocks()
    for layer in trainer.sparse_layers:
        assert layer.nnz == expected[layer.layer_name], (layer.layer_name, layer.nnz)
        assert len(layer.cols.numpy()) == layer.nnz == layer.values.numpy().shape[0]
    for name, count in trainer.steps.traces.items():
        assert count <= 1, f"{name} was traced {count} times"


def layer_densities(layers: list[Any]) -> dict[str, float]:
    """Held weights / all weights of every layer (1 for a dense one), as the run trained it."""
    densities = {}
    for layer in layers:
        held = getattr(layer, "nnz", None)
        n_weights = layer.n_in * layer.n_out
        densities[layer.layer_name] = (
            1.0 if held is None else held * layer.block_size**2 / n_weights
        )
    return densities


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(float(value)) else float(value)


def make_summary(
    trainer: Trainer, threads: int, resumed_from: int | None, wall_seconds: float, sample: str
) -> dict[str, Any]:
    """summary.json (layout: docs/architecture.md)."""
    import tensorflow as tf

    settings, host, sparse_layers = trainer.settings, trainer.host, trainer.sparse_layers
    history = trainer.history.arrays()
    test_accuracies = history["test_accuracy"]
    best_epoch = best_epoch_by_validation(history["validation_accuracy"])
    samples_seen = settings.epochs * trainer.batches_per_epoch * settings.batch_size
    parameters = {layer.layer_name: int(layer.parameter_count) for layer in trainer.model.layers}
    total_parameters = sum(int(np.prod(v.numpy().shape)) for v in trainer.trainable)
    return {
        "model": settings.model,
        "sample": sample,
        "settings": settings.to_dict(),
        "seed": settings.seed,
        "settings_hash": trainer.key,
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
        },
        "threads": threads,
        "resumed_from_epoch": resumed_from,
        "train_images": trainer.data.n_train,
        "validation_images": trainer.data.n_validation,
        "batches_per_epoch": trainer.batches_per_epoch,
        "n_updates": trainer.total_updates,
        "wall_seconds": wall_seconds,
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
        "layer_densities": layer_densities(trainer.model.layers),
        "final_test_accuracy": float(test_accuracies[-1]),
        "final_test_loss": float(history["test_loss"][-1]),
        "final_validation_accuracy": _finite_or_none(history["validation_accuracy"][-1]),
        # Selected on validation: the test accuracy at the best validation epoch.
        "best_test_accuracy": None if best_epoch is None else float(test_accuracies[best_epoch]),
        "best_validation_accuracy": None
        if best_epoch is None
        else float(history["validation_accuracy"][best_epoch]),
        "best_epoch": best_epoch,
        "traces": trainer.steps.traces,
    }
