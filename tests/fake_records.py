"""Small generated records.npz / history.npz / summary.json in the contract's format.

The patterns evolve like a RigL run on MNIST: each update drops the blocks farthest from the
image centre (with noise) and regrows blocks nearer to it, with regrown values exactly 0, so the
pictures made from them look like the real thing and the counting rules can be tested.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from dynsparse.blocks import IMAGE_SIDE, N_PIXELS


@dataclass
class FakeLayer:
    name: str
    shape: tuple[int, int]
    block_size: int
    density: float
    # Centre-ness of each block row (higher = nearer the image centre), or None: no preference.
    row_preference: np.ndarray | None = None
    rows: list[np.ndarray] = field(default_factory=list)
    cols: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)

    @property
    def grid(self) -> tuple[int, int]:
        return self.shape[0] // self.block_size, self.shape[1] // self.block_size

    @property
    def nnz(self) -> int:
        return max(1, round(self.density * self.grid[0] * self.grid[1]))


def _initial_pattern(layer: FakeLayer, rng: np.random.Generator) -> None:
    n_rows, n_cols = layer.grid
    keys = np.sort(rng.choice(n_rows * n_cols, size=layer.nnz, replace=False))
    bs = layer.block_size
    layer.rows.append((keys // n_cols).astype(np.int32))
    layer.cols.append((keys % n_cols).astype(np.int32))
    layer.values.append(rng.normal(size=(layer.nnz, bs, bs)).astype(np.float32))


def _update_pattern(layer: FakeLayer, fraction: float, rng: np.random.Generator) -> None:
    """Drop `fraction` of the blocks, preferring far-from-centre rows; regrow as many with 0."""
    rows, cols, values = layer.rows[-1], layer.cols[-1], layer.values[-1].copy()
    n_rows, n_cols = layer.grid
    k = int(round(fraction * layer.nnz))
    if k == 0:
        layer.rows.append(rows.copy())
        layer.cols.append(cols.copy())
        layer.values.append(values)
        return
    preference = layer.row_preference if layer.row_preference is not None else np.zeros(n_rows)
    keep_score = preference[rows] + 0.3 * rng.random(len(rows))
    dropped = np.argsort(keep_score)[:k]
    keys = rows.astype(np.int64) * n_cols + cols
    free = np.setdiff1d(np.arange(n_rows * n_cols), keys)
    grow_weight = np.exp(4.0 * preference[free // n_cols])
    grown = rng.choice(free, size=k, replace=False, p=grow_weight / grow_weight.sum())
    rows, cols = rows.copy(), cols.copy()
    rows[dropped] = grown // n_cols
    cols[dropped] = grown % n_cols
    trained = values == 0  # blocks grown last time have been trained since
    values[trained] = rng.normal(0, 0.01, size=int(trained.sum()))
    values[dropped] = 0.0  # RigL regrows with zero-initialised weights
    layer.rows.append(rows)
    layer.cols.append(cols)
    layer.values.append(values)


def pixel_centre_preference(permutation: np.ndarray, block_size: int) -> np.ndarray:
    """Per block row of an input layer: 1 at the image centre, 0 at the corners."""
    y, x = np.divmod(permutation, IMAGE_SIDE)
    centre = (IMAGE_SIDE - 1) / 2
    radius = np.hypot(y - centre, x - centre) / np.hypot(centre, centre)
    return 1.0 - radius.reshape(-1, block_size).mean(axis=1)


def _evolve(
    layers: list[FakeLayer], n_updates: int, fraction: float, static: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    for layer in layers:
        _initial_pattern(layer, rng)
    for _ in range(n_updates):
        for layer in layers:
            _update_pattern(layer, 0.0 if static else fraction, rng)


def _records_arrays(
    model: str, layers: list[FakeLayer], n_updates: int, steps_per_update: int
) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {
        "model": np.array(model),
        "layers": np.array([layer.name for layer in layers], dtype=str),
        "n_updates": np.array(n_updates, dtype=np.int64),
        "update_index": np.arange(n_updates + 1, dtype=np.int32),
        "step": np.arange(n_updates + 1, dtype=np.int64) * steps_per_update,
    }
    for layer in layers:
        bs = layer.block_size
        arrays[f"{layer.name}/rows"] = np.stack(layer.rows).astype(np.int32)
        arrays[f"{layer.name}/cols"] = np.stack(layer.cols).astype(np.int32)
        arrays[f"{layer.name}/values"] = np.stack(layer.values).astype(np.float32)
        assert arrays[f"{layer.name}/values"].shape[1:] == (layer.nnz, bs, bs)
        arrays[f"{layer.name}/shape"] = np.array(layer.shape, dtype=np.int64)
        arrays[f"{layer.name}/block_size"] = np.array(bs, dtype=np.int64)
    return arrays


def fc_records(
    *,
    hidden: int = 64,
    densities: tuple[float, float] = (0.1, 0.5),
    block_size: int = 1,
    n_updates: int = 6,
    prune_fraction: float = 0.3,
    permute: bool = False,
    static: bool = False,
    steps_per_update: int = 20,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """FC records: fc1 784 -> hidden (block_size), fc2 hidden -> 10 (block size 1).

    A density of 1 makes that layer dense, so it is absent from the records.
    """
    rng = np.random.default_rng(seed + 1000)
    permutation = rng.permutation(N_PIXELS) if permute else np.arange(N_PIXELS)
    layers: list[FakeLayer] = []
    if densities[0] < 1:
        layers.append(
            FakeLayer(
                "fc1",
                (N_PIXELS, hidden),
                block_size,
                densities[0],
                pixel_centre_preference(permutation, block_size),
            )
        )
    if densities[1] < 1:
        layers.append(FakeLayer("fc2", (hidden, 10), 1, densities[1]))
    _evolve(layers, n_updates, prune_fraction, static, seed)
    arrays = _records_arrays("fc", layers, n_updates, steps_per_update)
    arrays["permutation"] = permutation.astype(np.int64)
    return arrays


def transformer_records(
    *,
    hidden: int = 16,
    block_size: int = 4,
    sparsity: float = 0.5,
    n_updates: int = 4,
    prune_fraction: float = 0.3,
    steps_per_update: int = 10,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Transformer records: a sparse embedding projection (28 features, padded) and five more."""
    padded = -(-28 // block_size) * block_size
    density = 1.0 - sparsity
    layers: list[FakeLayer] = []
    if density < 1:
        column = np.arange(padded // block_size) * block_size + (block_size - 1) / 2
        feature_preference = np.where(column < 28, 1.0 - np.abs(column - 13.5) / 13.5, -1.0)
        layers = [
            FakeLayer("embedding", (padded, hidden), block_size, density, feature_preference),
            FakeLayer("qkv", (hidden, 3 * hidden), block_size, density),
            FakeLayer("attention_out", (hidden, hidden), block_size, density),
            FakeLayer("ffn_in", (hidden, hidden), block_size, density),
            FakeLayer("ffn_out", (hidden, hidden), block_size, density),
            FakeLayer("head", (hidden, -(-10 // block_size) * block_size), block_size, density),
        ]
    _evolve(layers, n_updates, prune_fraction, False, seed)
    arrays = _records_arrays("transformer", layers, n_updates, steps_per_update)
    arrays["input_features"] = np.array(28, dtype=np.int64)
    arrays["padded_features"] = np.array(padded, dtype=np.int64)
    return arrays


def history_arrays(
    *,
    epochs: int = 2,
    batches_per_epoch: int = 60,
    final_accuracy: float = 0.95,
    seed: int = 0,
    batch_seconds: float = 0.004,
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = epochs * batches_per_epoch
    step = np.arange(1, n + 1, dtype=np.int64)
    trend = final_accuracy * (1.0 - np.exp(-step / (0.15 * n)))
    accuracy = np.clip(trend + rng.normal(0, 0.05, n), 0, 1).astype(np.float32)
    epoch_test = final_accuracy - 0.02 * np.exp(-np.arange(1, epochs + 1)) + 0.002
    # Validation peaks at the first epoch, test at the last: "best" must follow validation.
    epoch_validation = final_accuracy + 0.01 * (np.arange(epochs, 0, -1) == epochs)
    return {
        "step": step,
        "epoch": (step - 1) // batches_per_epoch,
        "loss": (2.3 * (1 - trend) + 0.05).astype(np.float32),
        "accuracy": accuracy,
        "learning_rate": np.full(n, 1e-3, dtype=np.float32),
        "pruned_fraction": np.where(step > n // 5, 0.3, 0.0).astype(np.float32),
        "step_time": np.full(n, batch_seconds, dtype=np.float32),
        "epoch_index": np.arange(epochs, dtype=np.int64),
        "train_loss": np.linspace(0.25, 0.05, epochs),
        "train_accuracy": np.full(epochs, final_accuracy + 0.01),
        "validation_loss": np.linspace(0.3, 0.1, epochs),
        "validation_accuracy": epoch_validation.astype(np.float64),
        "test_loss": np.linspace(0.3, 0.1, epochs),
        "test_accuracy": epoch_test.astype(np.float64),
        "train_seconds": np.full(epochs, batches_per_epoch * batch_seconds * 1.1),
    }


def summary_document(
    model: str,
    sample: str,
    settings: dict,
    history: dict[str, np.ndarray],
    records: dict[str, np.ndarray] | None = None,
) -> dict:
    """summary.json with the keys dynsparse.train writes (the ones the summary stage reads)."""
    seconds = float(np.sum(history["train_seconds"]))
    batch = int(settings.get("batch_size", 16))
    layers = [] if records is None else [str(n) for n in records["layers"]]
    nonzero_blocks = {name: int(records[f"{name}/rows"].shape[1]) for name in layers}
    block_sizes = {name: int(records[f"{name}/block_size"]) for name in layers}
    nonzero_weights = {
        name: int(np.count_nonzero(records[f"{name}/values"][-1])) for name in layers
    }
    accuracy = np.asarray(history["test_accuracy"])
    return {
        "model": model,
        "sample": sample,
        "settings": settings,
        "seed": settings.get("seed", 0),
        "batches_per_epoch": int(np.sum(history["epoch"] == history["epoch"][0])),
        "n_updates": 0 if records is None else int(records["n_updates"]),
        "wall_seconds": seconds * 1.2,
        "train_seconds": seconds,
        "throughput_samples_per_second": len(history["step"]) * batch / seconds,
        "nonzero_blocks": nonzero_blocks,
        "block_sizes": block_sizes,
        "parameters": {name: n * block_sizes[name] ** 2 for name, n in nonzero_blocks.items()},
        "total_parameters": 1000 + sum(n * block_sizes[k] ** 2 for k, n in nonzero_blocks.items()),
        "nonzero_weights": nonzero_weights,
        "final_test_accuracy": float(accuracy[-1]),
        "final_test_loss": float(history["test_loss"][-1]),
        "best_test_accuracy": float(accuracy.max()),
        "best_epoch": int(np.argmax(accuracy)),
    }


def write_sample(
    folder: Path,
    model: str,
    sample: str,
    settings: dict,
    records: dict[str, np.ndarray],
    history: dict[str, np.ndarray],
) -> Path:
    """Write records.npz, history.npz and summary.json into `folder` (results/{model}/{sample})."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "records.npz", **records)
    np.savez_compressed(folder / "history.npz", **history)
    document = summary_document(model, sample, settings, history, records)
    (folder / "summary.json").write_text(json.dumps(document, indent=2))
    return folder
