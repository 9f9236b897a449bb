"""Record extraction on small generated records."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from dynsparse.extract import (
    SparseLayer,
    connections_per_input,
    density_map,
    extract_connectivity,
    extract_records,
    map_tile,
    metrics_table,
    nonzero_per_input,
)
from fake_records import fc_records, history_arrays, transformer_records, write_sample


def one_layer(rows: list[list[int]], cols: list[list[int]], values: np.ndarray, shape, bs):
    return SparseLayer(
        "fc1", shape, bs, np.array(rows), np.array(cols), np.asarray(values, dtype=np.float32)
    )


def test_pattern_counting_includes_zero_valued_blocks() -> None:
    values = np.array([[[[1.0, 0.0], [2.0, 3.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    layer = one_layer([[0, 1]], [[1, 0]], values, (4, 4), 2)
    # Each block gives each of its 2 input rows 2 connections, the all-zero regrown block too.
    np.testing.assert_array_equal(connections_per_input(layer), [[2, 2, 2, 2]])
    np.testing.assert_array_equal(nonzero_per_input(layer), [[1, 2, 0, 0]])


def test_fc_counts_undo_the_permutation() -> None:
    records = fc_records(permute=True, n_updates=2, seed=3)
    extracted = extract_connectivity(records)
    permutation = records["permutation"]
    rows = records["fc1/rows"][1]
    in_permuted_order = np.bincount(rows, minlength=784)
    expected = np.zeros(784, dtype=np.int64)
    expected[permutation] = in_permuted_order  # input column k holds pixel permutation[k]
    np.testing.assert_array_equal(
        extracted.connectivity["connections_per_pixel"][1], expected.reshape(28, 28)
    )


@pytest.mark.parametrize("block_size", [1, 4, 16])
def test_fc_total_connections_stay_constant_while_nonzeros_dip(block_size: int) -> None:
    records = fc_records(block_size=block_size, n_updates=3, hidden=64)
    connectivity = extract_connectivity(records).connectivity
    totals = connectivity["connections_per_pixel"].reshape(4, -1).sum(axis=1)
    nnz = records["fc1/rows"].shape[1]
    assert totals.tolist() == [nnz * block_size**2] * 4
    nonzero = connectivity["nonzero_per_pixel"].reshape(4, -1).sum(axis=1)
    assert nonzero[0] == totals[0] and all(nonzero[1:] < totals[1:])


def test_fc_derived_figures() -> None:
    derived = extract_connectivity(fc_records(n_updates=4, prune_fraction=0.25)).derived
    assert derived["model"] == "fc" and derived["input_layer"] == "fc1"
    first, last = derived["records"][0], derived["records"][-1]
    assert first["layers"]["fc1"]["changed_fraction"] is None
    assert last["layers"]["fc1"]["changed_fraction"] == pytest.approx(0.25, abs=0.01)
    assert last["pixels"]["unconnected"] >= first["pixels"]["unconnected"]
    assert last["pixels"]["min"] <= last["pixels"]["mean"] <= last["pixels"]["max"]
    assert "pattern" in derived["counting"]
    json.dumps(derived, allow_nan=False)


def test_static_records_change_nothing() -> None:
    derived = extract_connectivity(fc_records(static=True, n_updates=2)).derived
    assert [r["layers"]["fc1"]["changed_fraction"] for r in derived["records"]] == [None, 0, 0]


def test_dense_fc_has_no_pixel_map() -> None:
    extracted = extract_connectivity(fc_records(densities=(1.0, 1.0), n_updates=1))
    assert str(extracted.connectivity["input_layer"]) == ""
    assert "connections_per_pixel" not in extracted.connectivity
    assert extracted.derived["layers"] == [] and len(extracted.derived["records"]) == 2


def test_density_map_cells_and_values() -> None:
    assert map_tile(1536, 1) == 64 and map_tile(96, 8) == 8 and map_tile(28, 1) == 2
    layer = one_layer([[0, 0]], [[0, 1]], np.ones((1, 2, 2, 2)), (4, 8), 2)
    maps, tile = density_map(layer)
    assert tile == (2, 2)
    np.testing.assert_allclose(maps[0], [[1, 1, 0, 0], [0, 0, 0, 0]])


def test_transformer_embedding_features_and_layer_maps() -> None:
    records = transformer_records(block_size=8, sparsity=0.5, n_updates=2)
    extracted = extract_connectivity(records)
    connectivity = extracted.connectivity
    assert str(connectivity["embedding_layer"]) == "embedding"
    assert connectivity["connections_per_feature"].shape == (3, 32)
    assert int(connectivity["input_features"]) == 28
    for name in records["layers"]:
        density = connectivity[f"{name}/density_map"]
        n_in, n_out = records[f"{name}/shape"]
        assert density.shape[0] == 3 and density.min() >= 0 and density.max() <= 1
        # The maps average to the layer density.
        assert density[0].mean() == pytest.approx(
            records[f"{name}/rows"].shape[1] * 64 / (n_in * n_out)
        )
    features = extracted.derived["records"][0]["features"]
    assert features["padding_connections"] == connectivity["connections_per_feature"][0, 28:].sum()


def test_metrics_table_puts_test_metrics_on_each_epochs_last_batch() -> None:
    history = history_arrays(epochs=2, batches_per_epoch=5)
    rows = list(csv.DictReader(metrics_table(history).splitlines()))
    assert len(rows) == 10 and rows[0]["step"] == "1"
    assert [r["test_accuracy"] != "" for r in rows] == [False] * 4 + [True] + [False] * 4 + [True]
    assert float(rows[9]["test_accuracy"]) == pytest.approx(history["test_accuracy"][1])


def test_metrics_table_with_one_based_epoch_index_joins_by_position() -> None:
    history = history_arrays(epochs=2, batches_per_epoch=3)
    history["epoch_index"] = np.array([1, 2])
    history["epoch"] = history["epoch"] + 7  # neither numbering matches: fall back to order
    rows = list(csv.DictReader(metrics_table(history).splitlines()))
    assert [r["test_loss"] != "" for r in rows] == [False, False, True, False, False, True]


def test_extract_records_writes_the_three_artifacts(tmp_path: Path) -> None:
    folder = write_sample(
        tmp_path / "fc" / "s", "fc", "s", {}, fc_records(n_updates=2), history_arrays()
    )
    out = folder / "extracted"
    extract_records(
        folder / "records.npz",
        folder / "history.npz",
        out / "connectivity.npz",
        out / "metrics.csv",
        out / "derived.json",
    )
    with np.load(out / "connectivity.npz") as connectivity:
        assert connectivity["connections_per_pixel"].shape == (3, 28, 28)
    assert json.loads((out / "derived.json").read_text())["n_updates"] == 2
    assert (out / "metrics.csv").read_text().startswith("step,epoch,loss,accuracy")
    assert sorted(p.name for p in out.iterdir()) == [
        "connectivity.npz",
        "derived.json",
        "metrics.csv",
    ]
