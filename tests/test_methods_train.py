"""Every method, distribution and the deeper FC train end to end on a tiny generated MNIST."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dynsparse.records import Records
from test_train import _generated_mnist, _train, fc_settings, transformer_settings

pytestmark = pytest.mark.filterwarnings("ignore:(thread pools not set|TensorFlow already runs)")


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generated_mnist(tmp_path_factory.mktemp("data") / "mnist.npz", 1024, 256)


def tiny(**changes: Any) -> dict[str, Any]:
    """One epoch of 32 batches of 32 and four updates: seconds per run."""
    settings = {"epochs": 1, "updates_per_epoch": 4, "learning_rate": 0.003, **changes}
    return fc_settings(**settings)


def _pattern_changes(records: Records, layer: str) -> int:
    rows, cols = records[f"{layer}/rows"], records[f"{layer}/cols"]
    return sum(
        not (np.array_equal(rows[i], rows[i + 1]) and np.array_equal(cols[i], cols[i + 1]))
        for i in range(len(rows) - 1)
    )


@pytest.mark.parametrize(
    ("method", "changes", "update_steps", "changes_pattern"),
    [
        ("rigl", {}, 1, True),
        ("rigl", {"regrow_dropped": False}, 1, True),
        ("rigl", {"grow_batches": 3}, 1, True),
        ("rigl", {"update_end": 0.5}, 1, True),
        ("set", {}, 0, True),
        ("random", {"regrow_dropped": False}, 0, True),
        ("snfs", {}, 0, True),
        ("static", {}, 0, False),
        ("snip", {}, 0, False),
        # Starts dense, shrinks to the same block counts; records keep the full grid's rows.
        ("gmp", {"gmp": {"every": 4}}, 0, False),
    ],
)
def test_each_method_trains_and_keeps_the_pattern_size(
    method: str,
    changes: dict[str, Any],
    update_steps: int,
    changes_pattern: bool,
    tiny_mnist: Path,
    ops_library: str,
    tmp_path: Path,
) -> None:
    out = tmp_path / method
    summary = _train("fc", tiny(method=method, **changes), tiny_mnist, ops_library, out)
    assert summary["final_test_accuracy"] > 0.3, summary["final_test_accuracy"]
    assert summary["traces"]["update_step"] == update_steps
    assert summary["traces"]["train_chunk"] == 1
    assert summary["nonzero_blocks"] == {"fc1": 2509, "fc2": 160}
    assert summary["layer_densities"]["fc2"] == pytest.approx(0.5)
    records = Records.load(out / "records.npz")
    assert (_pattern_changes(records, "fc1") > 0) == changes_pattern
    if changes.get("update_end") == 0.5:
        assert _pattern_changes(records, "fc1") <= 2  # frozen after two of four updates
    history = np.load(out / "history.npz")
    assert len(history["loss"]) == 32  # every batch trained once, update steps included


def test_deeper_fc_with_erk_trains(tiny_mnist: Path, ops_library: str, tmp_path: Path) -> None:
    settings = tiny(hidden_sizes=[64, 32], density=0.2, distribution="erk", block_size=4)
    for key in ("densities", "hidden_size"):
        settings.pop(key)
    out = tmp_path / "deep"
    summary = _train("fc", settings, tiny_mnist, ops_library, out)
    assert summary["final_test_accuracy"] > 0.3
    densities = summary["layer_densities"]
    assert list(densities) == ["fc1", "fc2", "fc3"]
    assert densities["fc1"] < 0.2 < densities["fc2"] <= densities["fc3"]
    assert summary["block_sizes"] == {"fc1": 4, "fc2": 4}  # fc3 made dense by ERK
    assert densities["fc3"] == 1.0
    held = sum(densities[n] * s for n, s in (("fc1", 784 * 64), ("fc2", 64 * 32), ("fc3", 320)))
    assert held / (784 * 64 + 64 * 32 + 320) == pytest.approx(0.2, abs=0.01)
    assert json.loads((out / "summary.json").read_text())["layer_densities"] == densities


def test_snip_keeps_the_most_sensitive_blocks_with_their_dense_weights() -> None:
    from dynsparse.snip import snip_blocks

    kernel = np.arange(1.0, 17.0).reshape(4, 4)
    grad = np.ones((4, 4))
    grad[0, 0] = 100.0  # block (0, 0) of 2x2: |w·g| = 100 + 2 + 5 + 6 = 113
    rows, cols, values = snip_blocks(kernel, grad, 2, 2)
    # block sums: (0,0) 113, (0,1) 3+4+7+8 = 22, (1,0) 9+10+13+14 = 46, (1,1) 11+12+15+16 = 54
    assert rows.tolist() == [0, 1] and cols.tolist() == [0, 1]
    np.testing.assert_array_equal(values[1], [[11.0, 12.0], [15.0, 16.0]])
    assert values.dtype == np.float32


def test_snip_pattern_comes_from_the_dense_twin(
    tiny_mnist: Path, ops_library: str, tmp_path: Path
) -> None:
    """SNIP's initial pattern differs from static's random one and is the same on every run."""
    patterns = []
    for method, name in (("snip", "a"), ("snip", "b"), ("static", "c")):
        out = tmp_path / name
        _train("fc", tiny(method=method, epochs=1), tiny_mnist, ops_library, out)
        records = Records.load(out / "records.npz")
        patterns.append((records["fc1/rows"][0], records["fc1/cols"][0]))
    assert all(np.array_equal(x, y) for x, y in zip(patterns[0], patterns[1], strict=True))
    assert not np.array_equal(patterns[0][0], patterns[2][0])


def test_two_encoder_layers_train(tiny_mnist: Path, ops_library: str, tmp_path: Path) -> None:
    settings = transformer_settings(layers=2, epochs=1, train_samples=256)
    settings["updates_per_epoch"] = 2
    summary = _train("transformer", settings, tiny_mnist, ops_library, tmp_path / "two")
    records = Records.load(tmp_path / "two" / "records.npz")
    assert records.layers == [
        "embedding", "qkv", "attention_out", "ffn1", "ffn2",
        "qkv_2", "attention_out_2", "ffn1_2", "ffn2_2", "head",
    ]  # fmt: skip
    assert summary["traces"]["train_chunk"] == 1
    assert len(summary["layer_densities"]) == 10


def test_snfs_average_is_the_moving_average_of_the_dense_gradient(
    tiny_mnist: Path, ops_library: str
) -> None:
    """After one step from zero the average is (1 − 0.9)·xᵀ·dy: |that| / 0.1 equals the
    update step's |dense gradient| of an identical model on the same batch."""
    import tensorflow as tf
    from dynsparse.layers import make_optimizer
    from dynsparse.models import build_model
    from dynsparse.momentum import MomentumStepFunctions
    from dynsparse.registry import parse_settings
    from dynsparse.steps import StepFunctions

    settings = parse_settings("fc", tiny())
    with np.load(tiny_mnist) as data:
        images, labels = data["x_train"][:64], data["y_train"][:64].astype(np.int32)
    batch = np.arange(settings.batch_size, dtype=np.int32)
    results = []
    for steps_class in (MomentumStepFunctions, StepFunctions):
        model = build_model(settings, tf.random.Generator.from_seed(1))
        x, y = tf.constant(model.prepare(images)), tf.constant(labels)
        optimizer = make_optimizer("Adam", list(model.trainable_variables), {})
        steps = steps_class(model, optimizer, x, y, settings.batch_size, tuple(x.shape[1:]))
        if isinstance(steps, MomentumStepFunctions):
            steps.train_chunk(batch[None, :])
            results.append([np.abs(a.numpy()) / 0.1 for a in steps.averages])
        else:
            results.append([g.numpy() for g in steps.update_step(batch)[2]])
    for average, dense in zip(*results, strict=True):
        np.testing.assert_allclose(average, dense, rtol=1e-4, atol=1e-6)
