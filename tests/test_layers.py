"""Layers, optimizers with re-laid-out slots, learning-rate schedules and the two models."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dynsparse import blocks, rigl
from dynsparse.blocks import to_dense
from dynsparse.methods import METHODS

tf = pytest.importorskip("tensorflow")


def update_pattern(*args: Any, method: str, **kwargs: Any) -> rigl.PatternUpdate:
    """One layer's update by the registered method `method`."""
    return METHODS[method].update_pattern(*args, **kwargs)


@pytest.fixture(scope="module")
def loaded_ops(ops_library: str):
    from dynsparse import ops

    ops.load_ops(ops_library)
    return ops


def _sparse(n_in: int, n_out: int, density: float, bs: int, seed: int = 0, bias: bool = True):
    from dynsparse.layers import SparseLinear

    return SparseLinear(
        n_in,
        n_out,
        density=density,
        block_size=bs,
        pooling="SUM",
        use_bias=bias,
        index_rng=np.random.default_rng(seed),
        value_rng=np.random.default_rng(seed + 100),
        name="layer",
    )


# --- initialisation --------------------------------------------------------------------------


@pytest.mark.parametrize(("bs", "density"), [(1, 0.1), (4, 0.25), (16, 0.05)])
def test_sparse_init(bs: int, density: float) -> None:
    layer = _sparse(64, 32, density, bs)
    grid = (64 // bs, 32 // bs)
    assert layer.nnz == rigl.block_count(density, 64, 32, bs)
    rows, cols, values = layer.pattern()
    assert rows.dtype == np.int32 and cols.dtype == np.int32
    assert values.shape == (layer.nnz, bs, bs) and values.dtype == np.float32
    flat = rigl.flat_positions(rows, cols, grid)
    assert len(np.unique(flat)) == layer.nnz
    limit = math.sqrt(6 / ((64 + 32) * density))
    assert np.abs(values).max() <= limit
    assert np.abs(values).max() > 0.8 * limit  # spread over the whole interval
    np.testing.assert_array_equal(layer.bias.numpy(), np.zeros(32))
    assert not layer.rows.trainable and not layer.cols.trainable
    assert [v.name for v in layer.trainable_variables] == ["bias:0", "values:0"]


def test_sparse_init_positions_are_uniform() -> None:
    counts = np.zeros((10, 10))
    for seed in range(200):
        layer = _sparse(10, 10, 0.2, 1, seed=seed)
        rows, cols, _ = layer.pattern()
        counts[rows, cols] += 1
    # each position is chosen with probability 0.2: 40 expected out of 200
    assert counts.sum() == 200 * 20
    assert counts.min() > 20 and counts.max() < 60


def test_dense_init_is_glorot_uniform() -> None:
    from dynsparse.layers import DenseLinear

    layer = DenseLinear(300, 100, use_bias=True, value_rng=np.random.default_rng(0), name="d")
    kernel = layer.kernel.numpy()
    limit = math.sqrt(6 / 400)
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.99 * limit
    assert abs(kernel.std() - limit / math.sqrt(3)) < 0.01 * limit
    assert not layer.bias.numpy().any()


# --- the layer with the native op ------------------------------------------------------------


@pytest.mark.parametrize("bs", [1, 4])
def test_sparse_forward_matches_dense_and_assign_pattern(loaded_ops, bs: int) -> None:
    layer = _sparse(32, 16, 0.3, bs)
    x = np.random.default_rng(1).normal(size=(5, 32)).astype(np.float32)
    layer.bias.assign(np.arange(16, dtype=np.float32))
    rows, cols, values = layer.pattern()
    expected = x @ to_dense(rows, cols, values, (32, 16)) + np.arange(16)
    np.testing.assert_allclose(layer(tf.constant(x)).numpy(), expected, rtol=1e-5, atol=1e-5)

    # rank 3 inputs are flattened and restored
    y3 = layer(tf.constant(x.reshape(1, 5, 32))).numpy()
    np.testing.assert_allclose(y3.reshape(5, 16), expected, rtol=1e-5, atol=1e-5)

    handle = layer.values.handle
    grid = layer.grid_shape
    update = update_pattern(
        rows,
        cols,
        values,
        grid_shape=grid,
        block_size=bs,
        k=2,
        method="random",
        rng=np.random.default_rng(2),
    )
    layer.assign_pattern(update.rows, update.cols, update.gather(values))
    assert layer.values.handle is handle
    new_expected = x @ to_dense(update.rows, update.cols, update.gather(values), (32, 16))
    np.testing.assert_allclose(
        layer(tf.constant(x)).numpy(), new_expected + np.arange(16), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError):
        layer.assign_pattern(update.rows[:-1], update.cols[:-1], update.gather(values)[:-1])


def test_capture_gives_the_pre_bias_output_and_dense_grad(loaded_ops) -> None:
    layer = _sparse(16, 8, 0.5, 4)
    layer.bias.assign(np.full(8, 3.0, dtype=np.float32))
    x = tf.constant(np.random.default_rng(3).normal(size=(6, 16)).astype(np.float32))
    capture: list = []
    with tf.GradientTape() as tape:
        y = layer(x, capture=capture)
        loss = tf.reduce_sum(y**2)
    (captured,) = capture
    np.testing.assert_allclose(captured.pre_bias.numpy() + 3.0, y.numpy(), rtol=1e-6)
    dy = tape.gradient(loss, captured.pre_bias)
    np.testing.assert_allclose(dy.numpy(), 2 * y.numpy(), rtol=1e-5)
    pooled = layer.dense_grad(captured.x, dy).numpy()
    element = np.abs(x.numpy().T @ dy.numpy())
    np.testing.assert_allclose(pooled, blocks.pool(element, 4, "SUM"), rtol=1e-4)


# --- optimizers and slot re-layout -----------------------------------------------------------


@pytest.mark.parametrize("name", ["Adam", "Momentum"])
def test_relayout_keeps_kept_state_and_zeroes_new(name: str) -> None:
    from dynsparse.layers import make_optimizer

    bs = 2
    grid = (6, 6)
    rng = np.random.default_rng(4)
    rows, cols = blocks.random_pattern(grid, 10, rng)
    values = tf.Variable(rng.normal(size=(10, bs, bs)).astype(np.float32))
    other = tf.Variable(np.ones(3, dtype=np.float32))
    optimizer = make_optimizer(name, [values, other], {"momentum": 0.9} if name != "Adam" else {})
    optimizer.learning_rate.assign(0.01)
    for _ in range(3):
        optimizer.apply([tf.constant(rng.normal(size=(10, bs, bs)).astype(np.float32)), tf.ones(3)])
    slots_before = {slot: var.numpy() for slot, var in optimizer.slots_of(values).items()}
    other_before = {slot: var.numpy() for slot, var in optimizer.slots_of(other).items()}
    assert all(np.abs(s).sum() > 0 for s in slots_before.values())
    powers = (
        (optimizer.beta1_power.numpy(), optimizer.beta2_power.numpy()) if name == "Adam" else None
    )

    update = update_pattern(
        rows,
        cols,
        values.numpy(),
        grid_shape=grid,
        block_size=bs,
        k=4,
        method="rigl",
        dense_grad=rng.random((12, 12)),
    )
    values.assign(update.gather(values.numpy()))
    optimizer.relayout(values, update.gather)
    for slot, var in optimizer.slots_of(values).items():
        after = var.numpy()
        kept = update.source >= 0
        np.testing.assert_array_equal(after[kept], slots_before[slot][update.source[kept]])
        assert not after[~kept].any(), f"{slot} of new blocks must be zero"
        assert (~kept).sum() == 4
    for slot, var in optimizer.slots_of(other).items():
        np.testing.assert_array_equal(var.numpy(), other_before[slot])
    if powers is not None:
        assert (optimizer.beta1_power.numpy(), optimizer.beta2_power.numpy()) == powers


def test_adam_matches_the_textbook_update() -> None:
    from dynsparse.layers import Adam

    variable = tf.Variable([1.0, -2.0])
    optimizer = Adam([variable], epsilon=1e-8)
    optimizer.learning_rate.assign(0.1)
    grads = [np.array([0.5, -1.0]), np.array([0.1, 0.3])]
    m = np.zeros(2)
    v = np.zeros(2)
    expected = np.array([1.0, -2.0])
    for t, g in enumerate(grads, start=1):
        optimizer.apply([tf.constant(g, tf.float32)])
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        lr_t = 0.1 * math.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        expected = expected - lr_t * m / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5)


def test_optimizer_args_are_checked() -> None:
    from dynsparse.layers import make_optimizer

    variable = tf.Variable([1.0])
    with pytest.raises(ValueError):
        make_optimizer("Adam", [variable], {"momentum": 0.9})
    with pytest.raises(ValueError):
        make_optimizer("Adagrad", [variable], {})
    momentum = make_optimizer("Momentum", [variable], {})
    assert momentum.momentum == 1e-4 and momentum.nesterov


def test_learning_rate_schedules() -> None:
    import yaml
    from dynsparse.registry import MODELS

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())

    def learning_rate(
        model: str, optimizer: str, base: float | None, epoch: int, epochs: int, batch: int
    ) -> float:
        defaults = config[model]["defaults"]
        changes = {"optimizer": optimizer, "learning_rate": base, "epochs": epochs}
        settings = MODELS[model].parse({**defaults, **changes, "seed": 1, "batch_size": batch})
        return MODELS[model].learning_rate(settings, epoch)

    assert learning_rate("fc", "Adam", None, 3, 10, 16) == pytest.approx(0.002)
    assert learning_rate("fc", "Adam", None, 3, 10, 64) == pytest.approx(0.0005)
    assert learning_rate("fc", "Adam", 0.01, 9, 10, 64) == pytest.approx(0.01)
    momentum = [learning_rate("fc", "Momentum", None, e, 10, 16) for e in range(10)]
    assert momentum == pytest.approx(
        [0.02, 0.02, 0.01, 0.01, 0.005, 0.005] + [0.001] * 2 + [1e-4] * 2
    )
    transformer = [learning_rate("transformer", "Adam", None, e, 4, 2) for e in range(4)]
    assert transformer == pytest.approx([1e-3, 5e-4, 3e-4, 1e-4])
    assert learning_rate("transformer", "Adam", 0.004, 0, 3, 32) == pytest.approx(0.004)


# --- models ----------------------------------------------------------------------------------


def test_block_input_permutation() -> None:
    from dynsparse.models import block_tile_shape, input_permutation

    assert [block_tile_shape(b) for b in (1, 4, 8, 16)] == [(1, 1), (2, 2), (4, 2), (4, 4)]
    for mode, bs in (("none", 1), ("random", 1), ("block", 4), ("block", 8), ("block", 16)):
        perm = input_permutation(mode, bs, seed=1)
        assert sorted(perm.tolist()) == list(range(784))
    perm = input_permutation("block", 16, seed=1)
    # the first 16 inputs are the top-left 4×4 tile, row-major
    assert perm[:16].tolist() == [r * 28 + c for r in range(4) for c in range(4)]
    assert perm[16:20].tolist() == [4, 5, 6, 7]
    np.testing.assert_array_equal(
        input_permutation("random", 1, seed=1), np.random.RandomState(1).permutation(784)
    )


def _settings(model: str, **changes: Any) -> Any:
    """config.yaml's defaults of `model` with `changes`, typed."""
    import yaml
    from dynsparse.registry import parse_settings

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    return parse_settings(model, {**config[model]["defaults"], "seed": 1, **changes})


def _fc_settings(**changes: Any) -> Any:
    return _settings("fc", **{"hidden_size": 32, **changes})


def _transformer_settings(**changes: Any) -> Any:
    """The transformer defaults are the original's sizes."""
    return _settings("transformer", **changes)


def test_transformer_layer_sizes_match_the_original() -> None:
    from dynsparse.models import TransformerModel

    generator = tf.random.Generator.from_seed(0)
    model = TransformerModel(_transformer_settings(), generator)
    assert [layer.nnz for layer in model.sparse_layers] == [269, 14746, 4916, 461, 461, 96]
    assert model.padded_features == 28
    model = TransformerModel(_transformer_settings(sparsity=0.5, block_size=8), generator)
    assert [layer.nnz for layer in model.sparse_layers] == [24, 1152, 384, 36, 36, 12]
    assert model.padded_features == 32 and model.head.n_out == 16
    assert [layer.bias is not None for layer in model.layers] == [
        True,
        False,
        False,
        True,
        True,
        False,
    ]
    dense = TransformerModel(_transformer_settings(sparsity=0.0), generator)
    assert dense.sparse_layers == []


def test_models_run_and_capture_every_sparse_layer(loaded_ops) -> None:
    from dynsparse.models import FCModel, TransformerModel

    generator = tf.random.Generator.from_seed(0)
    images = np.random.default_rng(5).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    small = _transformer_settings(
        sparsity=0.5, block_size=4, hidden_size=16, heads=2, qkv_size=8, ff_size=16
    )
    for model in (
        FCModel(_fc_settings(block_size=4, permute_input="block"), generator),
        TransformerModel(small, generator),
    ):
        x = tf.constant(model.prepare(images))
        capture: list = []
        logits = model(x, training=True, capture=capture)
        assert logits.shape == (3, 10)
        assert [c.layer for c in capture] == model.sparse_layers
        # evaluation is deterministic: no dropout
        np.testing.assert_array_equal(
            model(x, training=False).numpy(), model(x, training=False).numpy()
        )
    fc = FCModel(_fc_settings(densities=[1.0, 0.5]), generator)
    assert [layer.layer_name for layer in fc.sparse_layers] == ["fc2"]


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("Adam", {}),
        ("Momentum", {"momentum": 0.9, "nesterov": True}),
        ("Momentum", {"momentum": 0.5, "nesterov": False}),
    ],
)
def test_fused_update_matches_tensorflows_per_variable_kernels(
    loaded_ops: Any, name: str, args: dict[str, Any]
) -> None:
    """One DynsparseApply* op over all variables = one ResourceApply* op per variable."""
    from dynsparse.layers import make_optimizer

    rng = np.random.default_rng(7)
    shapes = [(30, 4, 4), (16,), (784, 320), ()]
    initial = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
    grads = [[rng.normal(size=shape).astype(np.float32) for shape in shapes] for _ in range(4)]

    def run(fused: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
        variables = [tf.Variable(value) for value in initial]
        optimizer = make_optimizer(name, variables, args)
        optimizer.learning_rate.assign(0.01)
        apply = optimizer.apply if fused else optimizer._apply_per_variable  # noqa: SLF001

        @tf.function
        def step(g: list[tf.Tensor]) -> None:
            apply(g)

        for g in grads:
            step([tf.constant(x) for x in g])
        slots = [slot.numpy() for slot_list in optimizer.slots.values() for slot in slot_list]
        return [v.numpy() for v in variables], slots

    fused_values, fused_slots = run(fused=True)
    tf_values, tf_slots = run(fused=False)
    for ours, theirs in zip(fused_values + fused_slots, tf_values + tf_slots, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=1e-6)
    assert not np.allclose(fused_values[2], initial[2]), "the update must move the weights"


def test_fused_update_names_a_mismatched_gradient(loaded_ops: Any) -> None:
    from dynsparse.layers import Adam

    optimizer = Adam([tf.Variable(np.zeros((3, 2), np.float32))])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"vars\[0\] has shape \[3,2\]"):
        optimizer.apply([tf.zeros((2, 3))])
