"""The training records (records.npz) and metrics history (history.npz); numpy only.

The layouts are specified in docs/architecture.md. Builders accumulate in memory (and round-trip
through `arrays()` / `from_arrays()` for checkpoints); readers give typed access for later stages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from dynsparse.atomic import save_npz
from dynsparse.blocks import load_npz, to_dense, to_mask

HISTORY_STEP_KEYS = (
    "step",
    "epoch",
    "loss",
    "accuracy",
    "learning_rate",
    "pruned_fraction",
    "step_time",
)
# Per epoch: the train metrics are the means over the epoch's batches; validation (NaN when the
# run holds out none) and test are measured before the epoch's last pattern update.
HISTORY_EPOCH_KEYS = (
    "epoch_index",
    "train_loss",
    "train_accuracy",
    "validation_loss",
    "validation_accuracy",
    "test_loss",
    "test_accuracy",
    "train_seconds",
)
_HISTORY_DTYPES = {
    "step": np.int64,
    "epoch": np.int64,
    "loss": np.float32,
    "accuracy": np.float32,
    "learning_rate": np.float32,
    "pruned_fraction": np.float32,
    "step_time": np.float32,
    "epoch_index": np.int64,
    "train_loss": np.float64,
    "train_accuracy": np.float64,
    "validation_loss": np.float64,
    "validation_accuracy": np.float64,
    "test_loss": np.float64,
    "test_accuracy": np.float64,
    "train_seconds": np.float64,
}


@dataclass(frozen=True)
class SparseLayerSpec:
    name: str
    shape: tuple[int, int]  # (n_in, n_out) of the (padded) weight matrix
    block_size: int
    nnz: int  # number of non-zero blocks


@dataclass
class RecordsBuilder:
    """Sparsity patterns of every sparse layer at step 0 and after every RigL update."""

    model: str
    layers: list[SparseLayerSpec]
    n_updates: int
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    update_index: list[int] = field(default_factory=list)
    step: list[int] = field(default_factory=list)
    rows: dict[str, list[np.ndarray]] = field(default_factory=dict)
    cols: dict[str, list[np.ndarray]] = field(default_factory=dict)
    values: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(
        self,
        update_index: int,
        step: int,
        patterns: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    ) -> None:
        """Record (rows, cols, values) of every sparse layer."""
        if set(patterns) != {layer.name for layer in self.layers}:
            raise ValueError(f"record has layers {sorted(patterns)}, expected {self.layer_names}")
        for layer in self.layers:
            rows, cols, values = patterns[layer.name]
            bs = layer.block_size
            shapes = (np.shape(rows), np.shape(cols), np.shape(values))
            if shapes != ((layer.nnz,), (layer.nnz,), (layer.nnz, bs, bs)):
                raise ValueError(
                    f"layer {layer.name}: record does not match its {layer.nnz} blocks"
                )
        self.update_index.append(int(update_index))
        self.step.append(int(step))
        for layer in self.layers:
            rows, cols, values = patterns[layer.name]
            self.rows.setdefault(layer.name, []).append(np.array(rows, dtype=np.int32))
            self.cols.setdefault(layer.name, []).append(np.array(cols, dtype=np.int32))
            self.values.setdefault(layer.name, []).append(np.array(values, dtype=np.float32))

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def __len__(self) -> int:
        return len(self.step)

    def arrays(self, start: int = 0) -> dict[str, np.ndarray]:
        """The records.npz arrays; `start` > 0 keeps only records [start:] (checkpoint chunks)."""
        out: dict[str, np.ndarray] = {
            "model": np.array(self.model),
            "layers": np.array(self.layer_names, dtype=str),
            "n_updates": np.array(self.n_updates, dtype=np.int64),
            "update_index": np.array(self.update_index[start:], dtype=np.int32),
            "step": np.array(self.step[start:], dtype=np.int64),
        }
        for layer in self.layers:
            bs = layer.block_size
            name = layer.name
            out[f"{name}/rows"] = _stack(self.rows.get(name, [])[start:], (layer.nnz,), np.int32)
            out[f"{name}/cols"] = _stack(self.cols.get(name, [])[start:], (layer.nnz,), np.int32)
            out[f"{name}/values"] = _stack(
                self.values.get(name, [])[start:], (layer.nnz, bs, bs), np.float32
            )
            out[f"{name}/shape"] = np.array(layer.shape, dtype=np.int64)
            out[f"{name}/block_size"] = np.array(bs, dtype=np.int64)
        for key, value in self.extra.items():
            out[key] = np.asarray(value)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> RecordsBuilder:
        records = Records(dict(arrays))
        builder = cls(
            model=records.model,
            layers=[records.spec(name) for name in records.layers],
            n_updates=records.n_updates,
            extra={key: np.asarray(arrays[key]) for key in records.extra_keys},
        )
        builder.extend(arrays)
        return builder

    def extend(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Append the records held in `arrays` (a chunk from `arrays(start)`)."""
        records = Records(dict(arrays))
        if records.layers != self.layer_names:
            raise ValueError(f"chunk has layers {records.layers}, expected {self.layer_names}")
        for s in range(len(records.step)):
            self.add(
                int(records.update_index[s]),
                int(records.step[s]),
                {name: records.pattern(name, s) for name in records.layers},
            )

    def save(self, path: str | os.PathLike[str]) -> None:
        save_npz(path, **self.arrays())


def _stack(items: list[np.ndarray], shape: tuple[int, ...], dtype: type) -> np.ndarray:
    if not items:
        return np.zeros((0, *shape), dtype=dtype)
    return np.stack(items).astype(dtype, copy=False)


_CORE_KEYS = {"model", "layers", "n_updates", "update_index", "step"}


class Records:
    """Read access to records.npz (or its arrays)."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._arrays = arrays
        self.model = str(arrays["model"])
        self.layers = [str(name) for name in np.asarray(arrays["layers"]).tolist()]
        self.n_updates = int(arrays["n_updates"])
        self.update_index = np.asarray(arrays["update_index"])
        self.step = np.asarray(arrays["step"])

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Records:
        return cls(load_npz(path))

    def get(self, key: str, default: np.ndarray) -> np.ndarray:
        return np.asarray(self._arrays[key]) if key in self._arrays else np.asarray(default)

    def __getitem__(self, key: str) -> np.ndarray:
        return np.asarray(self._arrays[key])

    def __contains__(self, key: str) -> bool:
        return key in self._arrays

    @property
    def extra_keys(self) -> list[str]:
        return [key for key in self._arrays if key not in _CORE_KEYS and "/" not in key]

    def spec(self, name: str) -> SparseLayerSpec:
        shape = tuple(int(v) for v in self[f"{name}/shape"])
        return SparseLayerSpec(
            name=name,
            shape=(shape[0], shape[1]),
            block_size=int(self[f"{name}/block_size"]),
            nnz=int(self[f"{name}/rows"].shape[1]),
        )

    def pattern(self, name: str, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            self[f"{name}/rows"][index],
            self[f"{name}/cols"][index],
            self[f"{name}/values"][index],
        )

    def dense(self, name: str, index: int) -> np.ndarray:
        """The weight matrix [n_in, n_out] of layer `name` at record `index` (zeros elsewhere)."""
        spec = self.spec(name)
        rows, cols, values = self.pattern(name, index)
        return to_dense(rows, cols, values, spec.shape)

    def mask(self, name: str, index: int) -> np.ndarray:
        """Boolean [n_in, n_out]: the positions covered by the layer's blocks (zero or not)."""
        spec = self.spec(name)
        rows, cols, _ = self.pattern(name, index)
        return to_mask(rows, cols, spec.block_size, spec.shape)


@dataclass
class HistoryBuilder:
    """Per-batch and per-epoch metrics."""

    steps: dict[str, list[float]] = field(
        default_factory=lambda: {key: [] for key in HISTORY_STEP_KEYS}
    )
    epochs: dict[str, list[float]] = field(
        default_factory=lambda: {key: [] for key in HISTORY_EPOCH_KEYS}
    )

    def add_steps(self, **columns: np.ndarray | list[float]) -> None:
        if set(columns) != set(HISTORY_STEP_KEYS):
            raise ValueError(f"step columns {sorted(columns)}, expected {HISTORY_STEP_KEYS}")
        lengths = {len(np.atleast_1d(v)) for v in columns.values()}
        if len(lengths) != 1:
            raise ValueError("step columns differ in length")
        for key, value in columns.items():
            self.steps[key].extend(np.atleast_1d(value).tolist())

    def add_epoch(self, **values: float) -> None:
        if set(values) != set(HISTORY_EPOCH_KEYS):
            raise ValueError(f"epoch values {sorted(values)}, expected {HISTORY_EPOCH_KEYS}")
        for key, value in values.items():
            self.epochs[key].append(value)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {
            key: np.asarray(self.steps[key], dtype=_HISTORY_DTYPES[key])
            for key in HISTORY_STEP_KEYS
        }
        out.update(
            {
                key: np.asarray(self.epochs[key], dtype=_HISTORY_DTYPES[key])
                for key in HISTORY_EPOCH_KEYS
            }
        )
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> HistoryBuilder:
        builder = cls()
        for key in HISTORY_STEP_KEYS:
            builder.steps[key] = np.asarray(arrays[key]).tolist()
        for key in HISTORY_EPOCH_KEYS:
            builder.epochs[key] = np.asarray(arrays[key]).tolist()
        return builder
