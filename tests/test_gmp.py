"""Gradual magnitude pruning (method gmp): steps, pruning, config errors, training and resume."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dynsparse.config import ConfigError, load_yaml_strict, validate_config
from dynsparse.gmp import GmpPruner, GmpSteps, gmp_steps
from dynsparse.records import Records
from dynsparse.settings import GmpSettings
from test_train import _assert_same_results, _generated_mnist, _train_in_subprocess, fc_settings

pytestmark = pytest.mark.filterwarnings("ignore:(thread pools not set|TensorFlow already runs)")
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- steps


def test_gmp_steps_round_the_end_down_to_the_last_pruning_step() -> None:
    steps = gmp_steps(GmpSettings(start=0.1, end=0.7, every=4), total_steps=32)
    # start ⌊3.2⌋ = 3, end ⌊22.4⌋ = 22 → the last whole interval ends at 3 + 4·4 = 19.
    assert steps == GmpSteps(start_step=3, end_step=19, every=4)


def test_gmp_steps_need_one_whole_interval() -> None:
    with pytest.raises(ValueError, match="fewer than one pruning interval"):
        gmp_steps(GmpSettings(start=0.5, end=0.6, every=10), total_steps=32)


class _FakeLayer:
    """The layer interface the pruner reads: name, shape, grid and the current pattern."""

    def __init__(self, n_blocks_side: int, block_size: int) -> None:
        self.layer_name = "fc1"
        self.block_size = block_size
        self.n_in = self.n_out = n_blocks_side * block_size
        self.grid_shape = (n_blocks_side, n_blocks_side)
        grid = np.arange(n_blocks_side**2)
        self.rows, self.cols = grid // n_blocks_side, grid % n_blocks_side
        rng = np.random.default_rng(0)
        self.values = rng.standard_normal((grid.size, block_size, block_size)).astype(np.float32)

    @property
    def nnz(self) -> int:
        return len(self.rows)

    def pattern(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.rows, self.cols, self.values

    def assign_pattern(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> None:
        self.rows, self.cols, self.values = rows, cols, values


class _FakeOptimizer:
    def __init__(self, slot: np.ndarray) -> None:
        self.slot = slot

    def relayout(self, variable: Any, gather: Any) -> None:
        self.slot = gather(self.slot)


def test_pruner_follows_the_cubic_schedule_and_drops_the_smallest_blocks() -> None:
    layer = _FakeLayer(n_blocks_side=10, block_size=2)  # 100 blocks
    optimizer = _FakeOptimizer(np.arange(100.0))
    pruner = GmpPruner([layer], {"fc1": 0.1}, GmpSteps(start_step=10, end_step=40, every=10))
    assert [pruner.next_pruning_step(s) for s in (0, 10, 15, 39, 40)] == [10, 20, 20, 40, None]
    l1 = np.abs(layer.values).sum(axis=(1, 2))
    assert not pruner.prune(15, optimizer)  # not a pruning step
    assert not pruner.prune(10, optimizer)  # d(start) = 1: nothing to drop
    assert pruner.prune(20, optimizer)
    # d(20) = 0.1 + 0.9·(1 − 1/3)³ = 0.3667 → ⌈36.67⌉ = 37 blocks, the 37 largest by L1.
    assert layer.nnz == 37
    largest = np.sort(np.argsort(-l1, kind="stable")[:37])
    np.testing.assert_array_equal(layer.rows * 10 + layer.cols, largest)
    np.testing.assert_array_equal(optimizer.slot, largest.astype(float))  # slots moved along
    assert pruner.prune(30, optimizer) and layer.nnz == 14  # 0.1 + 0.9/27 = 0.1333
    assert pruner.prune(40, optimizer) and layer.nnz == 10
    assert pruner.final_blocks() == {"fc1": 10}
    rows, cols, values = pruner.recorded_pattern(layer)
    assert len(rows) == 100 and np.count_nonzero(np.abs(values).sum(axis=(1, 2))) == 10


# ----------------------------------------------------------------------------- the layer


def test_variable_block_layer_shrinks_in_place_and_its_slots_too() -> None:
    import tensorflow as tf
    from dynsparse.layers import Adam, SparseLinear

    def layer(variable_blocks: bool) -> SparseLinear:
        return SparseLinear(
            8, 8, density=1.0, block_size=4, pooling="SUM", use_bias=False,
            index_rng=np.random.default_rng(0), value_rng=np.random.default_rng(1),
            name="fc1", variable_blocks=variable_blocks,
        )  # fmt: skip

    shrinking = layer(True)
    optimizer = Adam([shrinking.values])
    assert shrinking.values.shape.as_list() == [None, 4, 4]
    assert optimizer.slots["m"][0].shape.as_list() == [None, 4, 4]
    rows, cols, values = shrinking.pattern()
    shrinking.assign_pattern(rows[:1], cols[:1], values[:1])
    optimizer.relayout(shrinking.values, lambda a: a[:1])
    assert shrinking.nnz == 1 and shrinking.parameter_count == 16
    assert tuple(tf.shape(optimizer.slots["v"][0]).numpy()) == (1, 4, 4)
    fixed = layer(False)
    with pytest.raises(ValueError, match="exactly 4 blocks"):
        fixed.assign_pattern(rows[:1], cols[:1], values[:1])


# ----------------------------------------------------------------------------- config


@pytest.fixture(scope="module")
def config() -> dict:
    return load_yaml_strict(REPO / "config.yaml")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"method": "rigl", "gmp": {"every": 10}}, "gmp: is used by method gmp only"),
        ({"method": "gmp", "gmp": {"start": 0.5, "end": 0.4}}, "gmp: start 0.5 must come before"),
        ({"method": "gmp", "gmp": {"every": 10**9}}, "fewer than one pruning interval"),
        ({"method": "gmp", "gmp": {"every": 0}}, "gmp/every"),
        ({"method": "gmp", "gmp": {"end": 1.5}}, "gmp/end"),
        ({"method": "gmp", "gmp": {"begin": 0.1}}, "gmp"),
    ],
)
def test_bad_gmp_keys_name_model_sample_and_key(
    config: dict, override: dict, expected: str
) -> None:
    bad = copy.deepcopy(config)
    bad["fc"]["samples"] = {"bad_one": override}
    with pytest.raises(ConfigError) as caught:
        validate_config(bad)
    message = str(caught.value)
    assert "fc sample 'bad_one'" in message and expected in message, message


def test_a_good_gmp_sample_validates_with_its_settings(config: dict) -> None:
    good = copy.deepcopy(config)
    good["fc"]["samples"] = {"gmp_0.1": {"method": "gmp", "gmp": {"start": 0.2, "every": 50}}}
    (sample,) = [s for s in validate_config(good) if s.model == "fc"]
    assert sample.settings.rigl.gmp == GmpSettings(start=0.2, end=0.75, every=50)
    assert json.loads(sample.settings_json)["gmp"] == {"start": 0.2, "end": 0.75, "every": 50}


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generated_mnist(tmp_path_factory.mktemp("data") / "mnist.npz", 1024, 256)


def gmp_settings(**changes: Any) -> dict[str, Any]:
    """Two epochs of 32 batches; pruning every 4 steps from step 6 to step 42 of 64."""
    gmp = {"start": 0.1, "end": 0.7, "every": 4}
    return fc_settings(method="gmp", gmp=gmp, learning_rate=0.003, **changes)


@pytest.fixture(scope="module")
def gmp_run(tiny_mnist: Path, ops_library: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gmp") / "gmp"
    assert _train_in_subprocess(gmp_settings(), tiny_mnist, ops_library, out) == 0
    return out


def test_gmp_run_shrinks_from_dense_to_the_target_without_retracing(gmp_run: Path) -> None:
    summary = json.loads((gmp_run / "summary.json").read_text())
    assert summary["final_test_accuracy"] > 0.3, summary["final_test_accuracy"]
    # The same block counts as a static run at densities [0.1, 0.5], from 49·20·... full grids.
    assert summary["nonzero_blocks"] == {"fc1": 2509, "fc2": 160}
    assert summary["layer_densities"]["fc2"] == pytest.approx(0.5)
    assert summary["parameters"]["fc1"] == 2509 + 32  # values of the blocks left, plus bias
    # One trace each: the shrinking values, rows, cols and slots never retrace the step.
    assert summary["traces"] == {"train_chunk": 1, "update_step": 0, "evaluate": 1}
    records = Records.load(gmp_run / "records.npz")
    values = records["fc1/values"]  # the full 784×32 grid of blocks of 1, every record
    held = np.count_nonzero(np.abs(values).sum(axis=(2, 3)), axis=1)
    assert held[0] == 784 * 32  # started dense
    assert held[-1] == 2509
    assert np.all(np.diff(held) <= 0) and len(set(held.tolist())) > 2  # shrank gradually
    log = (gmp_run.parent / "gmp.log").read_text()
    assert "GMP prunes after steps 6, 10, ..., 42 down to fc1 2509, fc2 160 blocks" in log


def test_gmp_resume_after_kill_matches_an_uninterrupted_run(
    gmp_run: Path, tiny_mnist: Path, ops_library: str, tmp_path: Path
) -> None:
    out = tmp_path / "resumed"
    assert _train_in_subprocess(gmp_settings(), tiny_mnist, ops_library, out, kill=True) == -9
    assert list((out / "checkpoints").glob("*/epoch-0001/state.json"))
    assert _train_in_subprocess(gmp_settings(), tiny_mnist, ops_library, out) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_epoch"] == 1
    _assert_same_results(gmp_run, out)


def test_transformer_gmp_ends_at_its_sparsity(
    tiny_mnist: Path, ops_library: str, tmp_path: Path
) -> None:
    from test_train import _train, transformer_settings

    settings = transformer_settings(
        method="gmp", gmp={"every": 2}, epochs=1, train_samples=256, updates_per_epoch=2
    )  # 8 steps: prunings after steps 2, 4 and 6 (end ⌊0.75·8⌋ = 6)
    summary = _train("transformer", settings, tiny_mnist, ops_library, tmp_path / "t")
    assert summary["traces"]["train_chunk"] == 1
    for name, density in summary["layer_densities"].items():
        assert density == pytest.approx(0.5, abs=0.02), name
