"""Training: records/history files, a short run that learns, determinism, resume after a kill."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from dynsparse.blocks import to_dense
from dynsparse.records import HistoryBuilder, Records, RecordsBuilder, SparseLayerSpec
from dynsparse.train import (
    best_epoch_by_validation,
    epoch_order,
    train_and_validation_indices,
    training_subset,
    update_batches,
)

WORKFLOW = Path(__file__).resolve().parents[1] / "workflow"
# In-process runs share one TensorFlow runtime, already started by earlier tests: its thread pools
# cannot follow `threads` any more. Runs compared bitwise use fresh processes instead.
pytestmark = pytest.mark.filterwarnings("ignore:(thread pools not set|TensorFlow already runs)")
TIMING_KEYS = {"step_time", "train_seconds"}


# --- numpy parts ---------------------------------------------------------------------------


def test_records_round_trip(tmp_path: Path) -> None:
    spec = SparseLayerSpec(name="fc1", shape=(8, 4), block_size=2, nnz=3)
    builder = RecordsBuilder(
        model="fc", layers=[spec], n_updates=2, extra={"permutation": np.arange(784)}
    )
    rng = np.random.default_rng(0)
    for update in range(3):
        rows = np.array([0, 1, 3], dtype=np.int32)
        cols = np.array([1, 0, update % 2], dtype=np.int32)
        builder.add(update, update * 10, {"fc1": (rows, cols, rng.normal(size=(3, 2, 2)))})
    with pytest.raises(ValueError):
        builder.add(3, 30, {"fc1": (rows[:2], cols[:2], np.zeros((2, 2, 2)))})
    builder.save(tmp_path / "records.npz")
    records = Records.load(tmp_path / "records.npz")
    assert records.model == "fc" and records.layers == ["fc1"] and records.n_updates == 2
    assert records["fc1/rows"].shape == (3, 3) and records["fc1/rows"].dtype == np.int32
    assert records["fc1/values"].dtype == np.float32
    assert records["fc1/shape"].tolist() == [8, 4] and int(records["fc1/block_size"]) == 2
    assert records.update_index.tolist() == [0, 1, 2] and records.step.tolist() == [0, 10, 20]
    assert records["permutation"].dtype == np.int64
    dense = records.dense("fc1", 1)
    np.testing.assert_array_equal(dense[2:4, 0:2], records["fc1/values"][1][1])
    assert records.mask("fc1", 1).sum() == 12
    again = RecordsBuilder.from_arrays(builder.arrays()).arrays()
    assert again.keys() == builder.arrays().keys()
    for key, value in builder.arrays().items():
        np.testing.assert_array_equal(again[key], value)


def test_to_dense_places_blocks() -> None:
    values = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    dense = to_dense(np.array([0, 1]), np.array([1, 0]), values, (4, 4))
    np.testing.assert_array_equal(dense[0:2, 2:4], values[0])
    np.testing.assert_array_equal(dense[2:4, 0:2], values[1])
    assert dense.sum() == values.sum()


def test_history_round_trip() -> None:
    history = HistoryBuilder()
    history.add_steps(
        step=[1, 2],
        epoch=[0, 0],
        loss=[2.0, 1.5],
        accuracy=[0.1, 0.2],
        learning_rate=[0.1, 0.1],
        pruned_fraction=[0.0, 0.0],
        step_time=[0.01, 0.01],
    )
    history.add_epoch(
        epoch_index=0,
        train_loss=1.2,
        train_accuracy=0.4,
        validation_loss=1.1,
        validation_accuracy=0.45,
        test_loss=1.0,
        test_accuracy=0.5,
        train_seconds=3.0,
    )
    arrays = history.arrays()
    assert arrays["step"].dtype == np.int64 and arrays["loss"].dtype == np.float32
    assert arrays["test_accuracy"].tolist() == [0.5]
    again = HistoryBuilder.from_arrays(arrays).arrays()
    for key, value in arrays.items():
        np.testing.assert_array_equal(again[key], value)
    with pytest.raises(ValueError):
        history.add_steps(step=[3])


def test_training_images_never_include_the_validation_set() -> None:
    labels = np.random.default_rng(0).integers(0, 10, 1000)
    train, validation = train_and_validation_indices(labels, 100, seed=1, train_samples=None)
    assert len(validation) == 100 and len(train) == 900
    assert not set(train.tolist()) & set(validation.tolist())
    other_seed, same_validation = train_and_validation_indices(labels, 100, 2, train_samples=300)
    np.testing.assert_array_equal(same_validation, validation)  # the same for every seed
    assert len(other_seed) == 300 and set(other_seed.tolist()) <= set(train.tolist())
    everything, none = train_and_validation_indices(labels, 0, seed=1, train_samples=None)
    assert len(everything) == 1000 and len(none) == 0


def test_best_epoch_is_chosen_on_validation() -> None:
    assert best_epoch_by_validation(np.array([0.9, 0.95, 0.94])) == 1
    assert best_epoch_by_validation(np.array([np.nan, np.nan])) is None


def test_update_batches_and_data_order() -> None:
    assert update_batches(3750, 5) == [749, 1499, 2249, 2999, 3749]
    assert update_batches(10, 3) == [2, 5, 9]
    with pytest.raises(ValueError):
        update_batches(2, 3)
    np.testing.assert_array_equal(epoch_order(1, 4, 100), epoch_order(1, 4, 100))
    assert not np.array_equal(epoch_order(1, 4, 100), epoch_order(1, 5, 100))
    assert sorted(epoch_order(1, 4, 100).tolist()) == list(range(100))
    subset = training_subset(2, 100, 30)
    assert len(np.unique(subset)) == 30 and subset.max() < 100
    assert len(training_subset(2, 100, None)) == 100


# --- training on generated data -------------------------------------------------------------


def _generated_mnist(path: Path, n_train: int = 2048, n_test: int = 512) -> Path:
    """Ten noisy prototypes on a 28×28 grid: learnable in a few hundred small steps."""
    rng = np.random.default_rng(0)
    prototypes = rng.random((10, 28, 28)) < 0.25

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, size=n)
        flips = rng.random((n, 28, 28)) < 0.1
        images = np.logical_xor(prototypes[labels], flips)
        noise = rng.integers(0, 60, size=(n, 28, 28))
        return (images * 195 + noise).astype(np.uint8), labels.astype(np.uint8)

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture(scope="module")
def mnist_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generated_mnist(tmp_path_factory.mktemp("data") / "mnist.npz")


CONFIG = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())


def fc_settings(**changes: Any) -> dict[str, Any]:
    """config.yaml's FC defaults, shrunk to train in seconds on the generated data."""
    small = {
        "seed": 3,
        "validation": 0,
        "densities": [0.1, 0.5],
        "hidden_size": 32,
        "updates_per_epoch": 3,
        "learning_rate": None,
        "batch_size": 32,
        "epochs": 2,
    }
    return {**CONFIG["fc"]["defaults"], **small, **changes}


def transformer_settings(**changes: Any) -> dict[str, Any]:
    """config.yaml's transformer defaults, shrunk to train in seconds on the generated data."""
    small = {
        "seed": 5,
        "validation": 0,
        "sparsity": 0.5,
        "block_size": 4,
        "pooling": "SUM",
        "updates_per_epoch": 2,
        "learning_rate": 0.01,
        "batch_size": 32,
        "epochs": 2,
        "hidden_size": 16,
        "heads": 2,
        "qkv_size": 8,
        "ff_size": 16,
    }
    return {**CONFIG["transformer"]["defaults"], **small, **changes}


def _train(model: str, settings: dict[str, Any], mnist: Path, ops: str, out: Path) -> dict:
    from dynsparse.registry import parse_settings
    from dynsparse.train import train_sample

    with open(out.parent / f"{out.name}.log", "w") as log:
        return train_sample(parse_settings(model, settings), mnist, ops, out, threads=1, log=log)


def _assert_same_results(a: Path, b: Path) -> None:
    records_a, records_b = np.load(a / "records.npz"), np.load(b / "records.npz")
    assert records_a.files == records_b.files
    for key in records_a.files:
        np.testing.assert_array_equal(records_a[key], records_b[key], err_msg=key)
    history_a, history_b = np.load(a / "history.npz"), np.load(b / "history.npz")
    for key in history_a.files:
        if key not in TIMING_KEYS:
            np.testing.assert_array_equal(history_a[key], history_b[key], err_msg=key)
    summary_a = json.loads((a / "summary.json").read_text())
    summary_b = json.loads((b / "summary.json").read_text())
    assert summary_a["final_test_accuracy"] == summary_b["final_test_accuracy"]


_RUNNER = """
import os, signal, sys
sys.path.insert(0, {workflow!r})
from dynsparse.registry import parse_settings
from dynsparse.train import train_sample

def kill_in_second_epoch(kind, epoch, step):
    if {kill!r} and kind == "chunk" and epoch == 1:
        os.kill(os.getpid(), signal.SIGKILL)

with open({log!r}, "w") as log:
    train_sample(
        parse_settings("fc", {settings!r}), {mnist!r}, {ops!r}, {out!r}, 1, log,
        on_event=kill_in_second_epoch,
    )
"""


def _train_in_subprocess(
    settings: dict[str, Any], mnist: Path, ops: str, out: Path, kill: bool = False
) -> int:
    """Train in a fresh process with one thread, as the pipeline does; returns the exit status.

    Runs compared bitwise all happen this way, so they share one TensorFlow configuration.
    """
    script = _RUNNER.format(
        workflow=str(WORKFLOW),
        kill=kill,
        log=str(out.parent / f"{out.name}{'-killed' if kill else ''}.log"),
        settings=settings,
        mnist=str(mnist),
        ops=str(ops),
        out=str(out),
    )
    return subprocess.run([sys.executable, "-c", script], check=False).returncode


@pytest.fixture(scope="module")
def fc_run(mnist_file: Path, ops_library: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fc") / "rigl"
    assert _train_in_subprocess(fc_settings(), mnist_file, ops_library, out) == 0
    return out


def test_fc_training_learns_and_keeps_the_pattern_size(fc_run: Path) -> None:
    summary = json.loads((fc_run / "summary.json").read_text())
    assert summary["final_test_accuracy"] > 0.8, summary["final_test_accuracy"]
    assert summary["traces"] == {"train_chunk": 1, "update_step": 1, "evaluate": 1}
    assert summary["nonzero_blocks"] == {"fc1": 2509, "fc2": 160}
    assert summary["throughput_samples_per_second"] > 0 and summary["peak_memory_mb"] > 0
    records = Records.load(fc_run / "records.npz")
    # 2 epochs × 3 updates after the initial pattern
    assert records.update_index.tolist() == list(range(7))
    assert records.n_updates == 6
    batches = 2048 // 32
    assert records.step.tolist() == [0, 21, 42, 64, 85, 106, 128]
    for name in ("fc1", "fc2"):
        rows = records[f"{name}/rows"]
        assert rows.shape[0] == 7
        cols = records[f"{name}/cols"]
        positions = [set(zip(r, c, strict=True)) for r, c in zip(rows, cols, strict=True)]
        assert all(len(p) == rows.shape[1] for p in positions)
        assert positions[0] != positions[1], "RigL moved no block"
        assert positions[-2] == positions[-1], "the last update prunes nothing (f(T) = 0)"
    np.testing.assert_array_equal(records["permutation"], np.arange(784))
    history = np.load(fc_run / "history.npz")
    assert len(history["loss"]) == 2 * batches
    assert history["step"].tolist() == list(range(1, 2 * batches + 1))
    assert history["pruned_fraction"][0] == 0.0 and history["pruned_fraction"][-1] > 0.0
    assert history["test_accuracy"].shape == (2,)
    assert not (fc_run / "checkpoints").exists(), "a finished run removes its checkpoints"
    assert list((fc_run / "tensorboard").glob("events.out.tfevents.*"))
    log = (fc_run.parent / "rigl.log").read_text()
    assert "epoch 2/2" in log and "it/s" in log


def test_validation_is_held_out_and_measured_every_epoch(
    mnist_file: Path, ops_library: str, tmp_path: Path
) -> None:
    out = tmp_path / "validated"
    summary = _train("fc", fc_settings(validation=512), mnist_file, ops_library, out)
    assert summary["train_images"] == 2048 - 512 and summary["validation_images"] == 512
    history = np.load(out / "history.npz")
    assert history["validation_accuracy"].shape == (2,)
    assert np.all(history["validation_accuracy"] > 0.5)
    best = int(np.argmax(history["validation_accuracy"]))
    assert summary["best_epoch"] == best
    assert summary["best_test_accuracy"] == history["test_accuracy"][best]


@pytest.mark.parametrize("method", ["random", "static"])
def test_fc_random_and_static(
    method: str, mnist_file: Path, ops_library: str, tmp_path: Path
) -> None:
    out = tmp_path / method
    settings = fc_settings(method=method, epochs=1, block_size=4, pooling="MAX")
    summary = _train("fc", settings, mnist_file, ops_library, out)
    assert summary["final_test_accuracy"] > 0.5
    assert summary["traces"]["update_step"] == 0, "no dense gradient without rigl"
    records = Records.load(out / "records.npz")
    first, last = records["fc1/rows"][0], records["fc1/rows"][-1]
    cols_first, cols_last = records["fc1/cols"][0], records["fc1/cols"][-1]
    same = np.array_equal(first, last) and np.array_equal(cols_first, cols_last)
    assert same == (method == "static")


def test_transformer_training_learns(mnist_file: Path, ops_library: str, tmp_path: Path) -> None:
    out = tmp_path / "transformer"
    summary = _train("transformer", transformer_settings(), mnist_file, ops_library, out)
    assert summary["final_test_accuracy"] > 0.4, summary["final_test_accuracy"]
    assert summary["traces"] == {"train_chunk": 1, "update_step": 1, "evaluate": 1}
    records = Records.load(out / "records.npz")
    assert records.layers == ["embedding", "qkv", "attention_out", "ffn1", "ffn2", "head"]
    assert int(records["input_features"]) == 28 and int(records["padded_features"]) == 28
    assert records["head/shape"].tolist() == [16, 12]


def test_same_seed_gives_identical_results(
    fc_run: Path, mnist_file: Path, ops_library: str, tmp_path: Path
) -> None:
    out = tmp_path / "again"
    assert _train_in_subprocess(fc_settings(), mnist_file, ops_library, out) == 0
    _assert_same_results(fc_run, out)


def test_resume_after_kill_matches_an_uninterrupted_run(
    fc_run: Path, mnist_file: Path, ops_library: str, tmp_path: Path
) -> None:
    out = tmp_path / "resumed"
    status = _train_in_subprocess(fc_settings(), mnist_file, ops_library, out, kill=True)
    assert status == -9, (tmp_path / "resumed-killed.log").read_text()
    assert not (out / "summary.json").exists()
    assert list((out / "checkpoints").glob("*/epoch-0001/state.json"))

    assert _train_in_subprocess(fc_settings(), mnist_file, ops_library, out) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_epoch"] == 1
    log = (tmp_path / "resumed.log").read_text()
    assert "resumed from the checkpoint after epoch 1" in log
    # The first attempt's epoch, then the separator, then the resumed epoch.
    first, separator, second = (
        log.index("epoch 1/2: train loss"),
        log.index("= resumed"),
        log.index("epoch 2/2: train loss"),
    )
    assert first < separator < second
    _assert_same_results(fc_run, out)
    _assert_one_board_without_duplicates(out, fc_run)


def test_a_changed_config_does_not_resume(
    mnist_file: Path, ops_library: str, tmp_path: Path
) -> None:
    out = tmp_path / "changed"
    assert _train_in_subprocess(fc_settings(), mnist_file, ops_library, out, kill=True) == -9
    assert list((out / "checkpoints").glob("*/epoch-0001/state.json"))
    summary = _train("fc", fc_settings(epochs=1), mnist_file, ops_library, out)
    assert summary["resumed_from_epoch"] is None
    assert not (out / "checkpoints").exists()
    log = (tmp_path / "changed.log").read_text()
    assert "= resumed" not in log and log.count("epoch 1/1: train loss") == 1
    _assert_one_board_without_duplicates(out)


def test_a_forced_rerun_keeps_one_event_file(
    fc_run: Path, mnist_file: Path, ops_library: str, tmp_path: Path
) -> None:
    out = tmp_path / "forced"
    shutil.copytree(fc_run, out)
    _train("fc", fc_settings(), mnist_file, ops_library, out)
    _assert_one_board_without_duplicates(out, fc_run)


def _assert_one_board_without_duplicates(out: Path, reference: Path | None = None) -> None:
    """One event file, each (tag, step) once; the same steps as an uninterrupted run's."""
    from dynsparse.board import EVENTS_GLOB, read_scalars

    assert len(list((out / "tensorboard").glob(EVENTS_GLOB))) == 1
    scalars = [(tag, step) for step, tag, _ in read_scalars(out / "tensorboard")]
    assert scalars and len(set(scalars)) == len(scalars), "a step was written twice"
    if reference is not None:
        expected = [(tag, step) for step, tag, _ in read_scalars(reference / "tensorboard")]
        assert sorted(scalars) == sorted(expected)


def test_bench_training_measures_every_case(ops_library: str, tmp_path: Path) -> None:
    from dynsparse.bench_training import BenchCase, bench_training, write_csv

    cases = (
        BenchCase("fc", "dense", {"densities": [1.0, 1.0]}),
        BenchCase("fc", "sparse", {"densities": [0.1, 0.5]}),
        BenchCase("transformer", "sparse_b4", {}),
    )
    from dynsparse.registry import parse_settings

    settings = {
        "fc": parse_settings("fc", fc_settings()),
        "transformer": parse_settings("transformer", transformer_settings()),
    }
    rows = bench_training(
        ops_library, 1, settings, lambda _: None, steps={"fc": 5, "transformer": 3}, cases=cases
    )
    assert [row["case"] for row in rows] == ["dense", "sparse", "sparse_b4"]
    assert all(row["samples_per_second"] > 0 for row in rows)
    assert rows[0]["speedup_vs_dense"] == 1.0 and rows[1]["update_step_ms"] > 0
    # The call-level cost beside the step time: a call with no step costs less than one with.
    assert all(0 < row["empty_call_ms"] < row["step_ms"] * row["steps"] for row in rows)
    # Values plus Adam's two slots held by the sparse model scale with its non-zeros.
    assert rows[0]["held_floats_vs_dense"] == 1.0
    assert 0.05 < rows[1]["held_floats_vs_dense"] < 0.2
    write_csv(tmp_path / "training.csv", rows)
    header = (tmp_path / "training.csv").read_text().splitlines()[0]
    assert header.startswith("model,case,sparsity")


def test_bench_training_runs_one_thread_and_the_machines_cores(
    ops_library: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dynsparse import bench_training as module
    from dynsparse.registry import parse_settings

    machine = module.bench_threads(2)  # the child caps the count at the cores there are
    monkeypatch.setattr(module, "bench_threads", lambda requested: min(requested, 2))
    assert module.thread_counts(1) == [1]
    assert module.thread_counts(4) == [1, 2]
    cases = (
        module.BenchCase("fc", "dense", {"densities": [1.0, 1.0]}),
        module.BenchCase("fc", "sparse", {"densities": [0.1, 0.5]}),
    )
    lines: list[str] = []
    rows = module.bench_training_per_thread_count(
        ops_library, 2, {"fc": parse_settings("fc", fc_settings())}, lines.append,
        steps={"fc": 5}, cases=cases,
    )  # fmt: skip
    # Each count in its own process (TensorFlow's pools are fixed per process), ratios per count.
    assert [(row["threads"], row["case"]) for row in rows] == [
        (1, "dense"), (1, "sparse"), (machine, "dense"), (machine, "sparse"),
    ]  # fmt: skip
    assert [row["speedup_vs_dense"] for row in rows if row["case"] == "dense"] == [1.0, 1.0]
    assert any(line.startswith("2 thread(s): fc sparse") for line in lines)


def test_bench_cases_are_timed_in_groups_beside_their_baseline() -> None:
    """Each case's rounds run with the cases of its own baseline only (dense beside sparse), not
    after another model's steps."""
    from dynsparse.bench_training import DEFAULT_CASES, comparison_groups

    groups = comparison_groups(DEFAULT_CASES)
    assert sorted(i for group in groups for i in group) == list(range(len(DEFAULT_CASES)))
    for group in groups:
        models = {DEFAULT_CASES[i].model for i in group}
        baselines = {DEFAULT_CASES[i].baseline for i in group}
        assert len(models) == 1 and len(baselines) == 1
        (baseline,) = baselines
        assert baseline in {DEFAULT_CASES[i].name for i in group}
    fc_names = [DEFAULT_CASES[i].name for i in groups[0]]
    assert fc_names == ["dense", "sparse_0.1_0.3", "sparse_0.1_0.3_b16"]
