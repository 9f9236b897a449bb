"""Training records to tidy artifacts: connectivity maps, a metrics table, derived figures.

Connections are counted by the *pattern*: every position covered by one of a layer's blocks is a
connection, whatever its value. Blocks regrown by RigL start at exactly 0 and the records are
taken right after the update, so counting non-zero values (as the original did) would hide every
connection just grown and make the total drift by the prune fraction from frame to frame. With
pattern counting the total stays nnz·bs² in every frame, as the fixed-capacity layer really holds.
The non-zero counts are kept beside them (`nonzero_per_*`) for comparison.

connectivity.npz holds, for S records:
- `model`, `n_updates`, `update_index` [S], `step` [S], `layers` (sparse layers, model order)
- per sparse layer L: `L/shape`, `L/block_size`, `L/tile` (rows, cols of weights per map cell),
  `L/density_map` float32 [S, n_in/tile_r, n_out/tile_c] (fraction of weights connected per cell),
  `L/changed_fraction` float64 [S] (share of the blocks that are new since the previous record;
  NaN for the first)
- FC: `input_layer` ('' when fc1 is dense), `connections_per_pixel` and `nonzero_per_pixel`
  int32 [S, 28, 28] in original pixel order (the input permutation undone)
- transformer: `embedding_layer` ('' when dense), `input_features`, `padded_features`,
  `connections_per_feature` and `nonzero_per_feature` int32 [S, padded_features]
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dynsparse.atomic import save_npz, write_json, write_text
from dynsparse.blocks import IMAGE_SIDE, N_PIXELS, load_npz
from dynsparse.records import HISTORY_STEP_KEYS, Records
from dynsparse.registry import MODELS

# Density maps get at most this many cells a side: wide layers (QKV) stay readable, and a cell
# pools enough weights that a 90%-sparse layer shows density, not salt and pepper.
MAX_MAP_CELLS = 24
METRIC_STEP_COLUMNS = HISTORY_STEP_KEYS
METRIC_EPOCH_COLUMNS = ("test_loss", "test_accuracy", "train_seconds")
COUNTING_NOTE = (
    "connections are counted by the sparsity pattern (every weight inside a stored block, "
    "including blocks just regrown with value 0); nonzero_connections counts non-zero values"
)


@dataclass(frozen=True)
class SparseLayer:
    name: str
    shape: tuple[int, int]
    block_size: int
    rows: np.ndarray  # int [S, nnz] block rows
    cols: np.ndarray  # int [S, nnz] block cols
    values: np.ndarray  # float [S, nnz, bs, bs]

    @property
    def n_block_cols(self) -> int:
        return self.shape[1] // self.block_size

    @property
    def nnz(self) -> int:
        return int(self.rows.shape[1])


def sparse_layers(records: Mapping[str, np.ndarray] | Records) -> list[SparseLayer]:
    layers = []
    for name in np.asarray(records["layers"]).tolist():
        shape = tuple(int(v) for v in records[f"{name}/shape"])
        layers.append(
            SparseLayer(
                name=str(name),
                shape=(shape[0], shape[1]),
                block_size=int(records[f"{name}/block_size"]),
                rows=np.asarray(records[f"{name}/rows"], dtype=np.int64),
                cols=np.asarray(records[f"{name}/cols"], dtype=np.int64),
                values=np.asarray(records[f"{name}/values"]),
            )
        )
    return layers


def connections_per_input(layer: SparseLayer) -> np.ndarray:
    """int [S, n_in]: weights per input in the pattern (a block gives bs to each of its bs rows)."""
    bs = layer.block_size
    n_block_rows = layer.shape[0] // bs
    per_block_row = np.stack([np.bincount(r, minlength=n_block_rows) for r in layer.rows])
    return np.repeat(per_block_row * bs, bs, axis=1).astype(np.int64)


def nonzero_per_input(layer: SparseLayer) -> np.ndarray:
    """int [S, n_in]: non-zero weights per input."""
    bs = layer.block_size
    inputs = layer.rows[:, :, None] * bs + np.arange(bs)  # [S, nnz, bs]
    nonzero = np.count_nonzero(layer.values, axis=3)  # [S, nnz, bs]
    return np.stack(
        [
            np.bincount(i.ravel(), weights=w.ravel(), minlength=layer.shape[0])
            for i, w in zip(inputs, nonzero, strict=True)
        ]
    ).astype(np.int64)


def changed_fraction(layer: SparseLayer) -> np.ndarray:
    """[S]: share of blocks not in the previous record's pattern (NaN for the first)."""
    keys = layer.rows * layer.n_block_cols + layer.cols
    fractions = np.full(len(keys), np.nan)
    for s in range(1, len(keys)):
        fractions[s] = 1.0 - np.isin(keys[s], keys[s - 1]).sum() / max(layer.nnz, 1)
    return fractions


def map_tile(size: int, block_size: int, max_cells: int = MAX_MAP_CELLS) -> int:
    """The smallest multiple of the block size dividing `size` into at most `max_cells` cells."""
    for tile in range(block_size, size + 1, block_size):
        if size % tile == 0 and size // tile <= max_cells:
            return tile
    return block_size


def density_map(layer: SparseLayer) -> tuple[np.ndarray, tuple[int, int]]:
    """float32 [S, cells_r, cells_c]: fraction of the weights in each cell that are connected."""
    bs = layer.block_size
    tile_r, tile_c = map_tile(layer.shape[0], bs), map_tile(layer.shape[1], bs)
    cells_r, cells_c = layer.shape[0] // tile_r, layer.shape[1] // tile_c
    cell = (layer.rows * bs // tile_r) * cells_c + layer.cols * bs // tile_c
    counts = np.stack([np.bincount(c, minlength=cells_r * cells_c) for c in cell])
    density = counts * (bs * bs) / (tile_r * tile_c)
    return density.reshape(-1, cells_r, cells_c).astype(np.float32), (tile_r, tile_c)


def _input_layer(layers: list[SparseLayer], n_inputs: int) -> SparseLayer | None:
    return next((layer for layer in layers if layer.shape[0] == n_inputs), None)


def _spread(counts: np.ndarray) -> dict[str, float | int]:
    return {
        "unconnected": int(np.count_nonzero(counts == 0)),
        "min": int(counts.min()),
        "mean": float(counts.mean()),
        "max": int(counts.max()),
    }


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


@dataclass
class Extracted:
    connectivity: dict[str, np.ndarray]
    derived: dict[str, Any]


def pixel_inputs(
    records: Records, layers: list[SparseLayer], out: dict[str, np.ndarray], per_step: list[Any]
) -> str | None:
    """Connections per pixel of the input layer, in original pixel order: [S, 28, 28]."""
    permutation = np.asarray(records.get("permutation", np.arange(N_PIXELS)), dtype=np.int64)
    if sorted(permutation.tolist()) != list(range(N_PIXELS)):
        raise ValueError("records' permutation is not a permutation of the 784 pixels")
    inverse = np.argsort(permutation)  # original pixel p sits at input column inverse[p]
    first = _input_layer(layers, N_PIXELS)
    out["input_layer"] = np.array(first.name if first else "")
    if first is not None:
        shape = (len(records.update_index), IMAGE_SIDE, IMAGE_SIDE)
        pixels = connections_per_input(first)[:, inverse].reshape(shape)
        nonzero_pixels = nonzero_per_input(first)[:, inverse].reshape(shape)
        out["connections_per_pixel"] = pixels.astype(np.int32)
        out["nonzero_per_pixel"] = nonzero_pixels.astype(np.int32)
        for s, entry in enumerate(per_step):
            entry["pixels"] = _spread(pixels[s])
            entry["pixels"]["unconnected_by_nonzero"] = int(
                np.count_nonzero(nonzero_pixels[s] == 0)
            )
    return first.name if first else None


def feature_inputs(
    records: Records, layers: list[SparseLayer], out: dict[str, np.ndarray], per_step: list[Any]
) -> str | None:
    """Connections per input feature of the embedding: [S, padded_features]."""
    input_features = int(records.get("input_features", np.array(IMAGE_SIDE)))
    padded = int(records.get("padded_features", np.array(input_features)))
    embedding = _input_layer(layers, padded)
    out["embedding_layer"] = np.array(embedding.name if embedding else "")
    out["input_features"] = np.array(input_features, dtype=np.int64)
    out["padded_features"] = np.array(padded, dtype=np.int64)
    if embedding is not None:
        features = connections_per_input(embedding)
        out["connections_per_feature"] = features.astype(np.int32)
        out["nonzero_per_feature"] = nonzero_per_input(embedding).astype(np.int32)
        for s, entry in enumerate(per_step):
            entry["features"] = _spread(features[s, :input_features])
            entry["features"]["padding_connections"] = int(features[s, input_features:].sum())
    return embedding.name if embedding else None


InputView = Callable[[Records, list[SparseLayer], dict[str, np.ndarray], list[Any]], str | None]
# What a model's pictures show per input (the registry entry's `picture_inputs` names one).
INPUT_VIEWS: dict[str, InputView] = {"pixels": pixel_inputs, "features": feature_inputs}


def extract_connectivity(arrays: Mapping[str, np.ndarray] | Records) -> Extracted:
    records = arrays if isinstance(arrays, Records) else Records(arrays)
    model = records.model
    if model not in MODELS:
        raise ValueError(f"records of unknown model {model!r}")
    update_index = records.update_index
    steps = records.step
    if len(update_index) == 0:
        raise ValueError("records.npz holds no records (not even the initial pattern)")
    n_updates = records.n_updates
    layers = sparse_layers(records)
    out: dict[str, np.ndarray] = {
        "model": np.array(model),
        "n_updates": np.array(n_updates, dtype=np.int64),
        "update_index": update_index.astype(np.int64),
        "step": steps.astype(np.int64),
        "layers": np.array([layer.name for layer in layers], dtype=str),
    }
    per_step: list[dict[str, Any]] = [
        {"update_index": int(u), "step": int(s), "layers": {}}
        for u, s in zip(update_index, steps, strict=True)
    ]
    for layer in layers:
        maps, tile = density_map(layer)
        changed = changed_fraction(layer)
        n_weights = layer.shape[0] * layer.shape[1]
        out[f"{layer.name}/shape"] = np.array(layer.shape, dtype=np.int64)
        out[f"{layer.name}/block_size"] = np.array(layer.block_size, dtype=np.int64)
        out[f"{layer.name}/tile"] = np.array(tile, dtype=np.int64)
        out[f"{layer.name}/density_map"] = maps
        out[f"{layer.name}/changed_fraction"] = changed
        nonzero = np.count_nonzero(layer.values.reshape(len(layer.values), -1), axis=1)
        for s, entry in enumerate(per_step):
            connections = layer.nnz * layer.block_size**2
            entry["layers"][layer.name] = {
                "blocks": layer.nnz,
                "connections": connections,
                "density": connections / n_weights,
                "nonzero_connections": int(nonzero[s]),
                "changed_fraction": _finite_or_none(changed[s]),
            }

    input_name = INPUT_VIEWS[MODELS[model].picture_inputs](records, layers, out, per_step)

    derived = {
        "model": model,
        "n_updates": n_updates,
        "layers": [layer.name for layer in layers],
        "input_layer": input_name,
        "counting": COUNTING_NOTE,
        "records": per_step,
    }
    return Extracted(out, derived)


def _cell(value: Any) -> str:
    if isinstance(value, np.floating | float) and math.isnan(value):
        return ""
    return str(value)


def metrics_table(history: Mapping[str, np.ndarray]) -> str:
    """CSV text: one row per training batch; the epoch's test metrics on its last batch."""
    missing = [key for key in METRIC_STEP_COLUMNS if key not in history]
    if missing:
        raise ValueError(f"history.npz lacks {missing}")
    columns = {key: np.asarray(history[key]) for key in METRIC_STEP_COLUMNS}
    n = len(columns["step"])
    epoch_values = {key: np.full(n, np.nan) for key in METRIC_EPOCH_COLUMNS}
    batch_epochs = columns["epoch"]
    distinct = sorted(set(batch_epochs.tolist()))
    epoch_index = np.asarray(history.get("epoch_index", np.zeros(0)), dtype=np.int64).tolist()
    by_value = all(e in distinct for e in epoch_index)
    for position, epoch in enumerate(epoch_index):
        if not by_value and position >= len(distinct):
            break
        batch_epoch = epoch if by_value else distinct[position]
        last_row = int(np.flatnonzero(batch_epochs == batch_epoch)[-1])
        for key in METRIC_EPOCH_COLUMNS:
            if key in history:
                epoch_values[key][last_row] = np.asarray(history[key])[position]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*METRIC_STEP_COLUMNS, *METRIC_EPOCH_COLUMNS])
    for row in range(n):
        writer.writerow(
            [_cell(columns[key][row]) for key in METRIC_STEP_COLUMNS]
            + [_cell(epoch_values[key][row]) for key in METRIC_EPOCH_COLUMNS]
        )
    return buffer.getvalue()


def extract_records(
    records_path: str | os.PathLike[str],
    history_path: str | os.PathLike[str],
    connectivity_path: str | os.PathLike[str],
    metrics_path: str | os.PathLike[str],
    derived_path: str | os.PathLike[str],
) -> Extracted:
    extracted = extract_connectivity(Records.load(records_path))
    table = metrics_table(load_npz(history_path))
    save_npz(connectivity_path, **extracted.connectivity)
    write_text(metrics_path, table)
    write_json(derived_path, extracted.derived)
    return extracted
