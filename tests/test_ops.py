"""Unit tests of the block-sparse matmul ops, their Python wrappers and the build helper.

The exhaustive numeric comparison lives in the self-test (tests/test_selftest.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from dynsparse import build, ops, selftest
from dynsparse.blocks import pool as block_pool
from dynsparse.layers import activate


@pytest.fixture(params=ops.ISAS)
def isa(request: pytest.FixtureRequest, ops_library: Path) -> Iterator[str]:
    """Each instruction-set variant of the kernels this CPU supports, selected for the test."""
    if request.param not in ops.supported_isas():
        pytest.skip(f"this CPU cannot run the {request.param} kernels")
    with ops.using_isa(request.param):
        yield request.param


def random_pattern(
    rng: np.random.Generator, n_in: int, n_out: int, bs: int, nnz: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_block_rows, n_block_cols = n_in // bs, n_out // bs
    flat = rng.choice(n_block_rows * n_block_cols, size=nnz, replace=False)
    rows = (flat // n_block_cols).astype(np.int32)
    cols = (flat % n_block_cols).astype(np.int32)
    values = rng.standard_normal((nnz, bs, bs)).astype(np.float32)
    return values, rows, cols


def test_dense_from_blocks_places_each_block() -> None:
    values = np.arange(2 * 2 * 2, dtype=np.float32).reshape(2, 2, 2) + 1
    dense = ops.dense_from_blocks(values, np.array([0, 1]), np.array([1, 0]), (4, 6))
    expected = np.zeros((4, 6), np.float32)
    expected[0:2, 2:4] = values[0]
    expected[2:4, 0:2] = values[1]
    np.testing.assert_array_equal(dense, expected)


def test_dense_from_blocks_rejects_indivisible_shape() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        ops.dense_from_blocks(np.zeros((1, 4, 4)), np.array([0]), np.array([0]), (6, 8))


@pytest.mark.parametrize("bs", ops.BLOCK_SIZES)
def test_forward_and_gradients_match_dense(isa: str, bs: int) -> None:
    rng = np.random.default_rng(bs)
    batch, n_in, n_out = 7, 3 * 16, 2 * 16
    values, rows, cols = random_pattern(rng, n_in, n_out, bs, nnz=(n_in // bs) * (n_out // bs) // 3)
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    dy = rng.standard_normal((batch, n_out)).astype(np.float32)
    dense = ops.dense_from_blocks(values, rows, cols, (n_in, n_out)).astype(np.float64)

    x_t, values_t = tf.constant(x), tf.constant(values)
    with tf.GradientTape() as tape:
        tape.watch([x_t, values_t])
        y = ops.bsmm(x_t, values_t, rows, cols, n_out=n_out)
    dx, dvalues = tape.gradient(y, [x_t, values_t], output_gradients=tf.constant(dy))

    np.testing.assert_allclose(y.numpy(), x @ dense, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx.numpy(), dy @ dense.T, rtol=1e-5, atol=1e-5)
    dense_grad = x.astype(np.float64).T @ dy
    expected_dvalues = dense_grad.reshape(n_in // bs, bs, n_out // bs, bs).transpose(0, 2, 1, 3)
    np.testing.assert_allclose(dvalues.numpy(), expected_dvalues[rows, cols], rtol=1e-5, atol=1e-5)
    for pooling in ops.POOLINGS:
        pooled = ops.bsmm_dense_grad(x, dy, block_size=bs, pooling=pooling).numpy()
        expected = block_pool(np.abs(dense_grad), bs, pooling)
        np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-5, err_msg=pooling)


def test_rank3_input_is_flattened(ops_library: Path) -> None:
    rng = np.random.default_rng(3)
    values, rows, cols = random_pattern(rng, 32, 16, 8, nnz=4)
    x = rng.standard_normal((2, 5, 32)).astype(np.float32)
    y = ops.bsmm(x, values, rows, cols, n_out=16)
    assert y.shape == (2, 5, 16)
    expected = x @ ops.dense_from_blocks(values, rows, cols, (32, 16))
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5)
    dy = rng.standard_normal((2, 5, 16)).astype(np.float32)
    grad = ops.bsmm_dense_grad(x, dy, block_size=8, pooling="SUM")
    assert grad.shape == (4, 2)


def test_pattern_changed_in_place_needs_no_retrace(ops_library: Path) -> None:
    rng = np.random.default_rng(4)
    n_in, n_out, bs = 32, 32, 4
    values, rows, cols = random_pattern(rng, n_in, n_out, bs, nnz=10)
    values_v, rows_v, cols_v = tf.Variable(values), tf.Variable(rows), tf.Variable(cols)
    x = tf.constant(rng.standard_normal((3, n_in)).astype(np.float32))

    @tf.function
    def forward_and_grad(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            y = ops.bsmm(x, values_v, rows_v, cols_v, n_out=n_out)
            loss = tf.reduce_sum(y)
        return y, tape.gradient(loss, values_v)

    for _ in range(2):
        y, dvalues = forward_and_grad(x)
        dense = ops.dense_from_blocks(values_v.numpy(), rows_v.numpy(), cols_v.numpy(), (32, 32))
        np.testing.assert_allclose(y.numpy(), x.numpy() @ dense, rtol=1e-5, atol=1e-5)
        assert dvalues.shape == values.shape
        new_values, new_rows, new_cols = random_pattern(rng, n_in, n_out, bs, nnz=10)
        values_v.assign(new_values)
        rows_v.assign(new_rows)
        cols_v.assign(new_cols)
    assert forward_and_grad.experimental_get_tracing_count() == 1


def test_results_are_bitwise_stable(isa: str) -> None:
    rng = np.random.default_rng(5)
    for bs in (1, 16):
        values, rows, cols = random_pattern(rng, 256, 128, bs, nnz=(256 // bs) * (128 // bs) // 4)
        x = rng.standard_normal((67, 256)).astype(np.float32)
        first = ops.bsmm(x, values, rows, cols, n_out=128).numpy()
        for _ in range(3):
            np.testing.assert_array_equal(ops.bsmm(x, values, rows, cols, n_out=128).numpy(), first)


def test_row_major_patterns_take_the_same_groups(isa: str) -> None:
    """Blocks in strictly increasing (row, col) order (RigL's) take a shortcut through the
    grouping; out of order, the counting sort. A row-major pattern and the same pattern with two
    neighbours of different rows and columns swapped (out of order, the same groups) must give
    the same bits in every product; a repeated block is still reported."""
    rng = np.random.default_rng(21)
    for bs, (m, n_in, n_out) in ((1, (40, 96, 160)), (8, (28, 64, 96)), (16, (5, 64, 64))):
        nnz = (n_in // bs) * (n_out // bs) // 3
        values, rows, cols = random_pattern(rng, n_in, n_out, bs, nnz=nnz)
        order = np.lexsort((cols, rows))
        values, rows, cols = values[order], rows[order], cols[order]
        i = next(i for i in range(nnz - 1) if rows[i] != rows[i + 1] and cols[i] != cols[i + 1])
        swap = np.arange(nnz)
        swap[[i, i + 1]] = swap[[i + 1, i]]
        x = tf.constant(rng.standard_normal((m, n_in)).astype(np.float32))
        dy = tf.constant(rng.standard_normal((m, n_out)).astype(np.float32))
        results = []
        for perm in (np.arange(nnz), swap):
            v, r, c = values[perm], rows[perm], cols[perm]
            y = ops.bsmm(x, v, r, c, n_out=n_out)
            dx, dv = ops.loaded_ops().bsmm_backward(x, [dy], v, r, c, block_size=bs)
            dvalues = np.empty_like(dv.numpy())
            dvalues[perm] = dv.numpy()  # in the row-major pattern's order
            results.append([y.numpy(), dx.numpy(), dvalues])
        for row_major, general in zip(*results, strict=True):
            np.testing.assert_array_equal(row_major, general)
    with pytest.raises(tf.errors.InvalidArgumentError, match="duplicate block"):
        ops.bsmm(
            np.ones((2, 16), np.float32),
            np.ones((3, 4, 4), np.float32),
            np.array([0, 1, 1], np.int32),
            np.array([0, 2, 2], np.int32),
            n_out=16,
        )


def test_errors_name_the_problem(ops_library: Path) -> None:
    x = np.ones((2, 16), np.float32)
    values = np.ones((2, 4, 4), np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"rows\[1\] = 4 is out of range"):
        ops.bsmm(x, values, np.array([0, 4], np.int32), np.array([0, 0], np.int32), n_out=8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="duplicate block"):
        ops.bsmm(x, values, np.array([1, 1], np.int32), np.array([0, 0], np.int32), n_out=8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not divisible by block_size"):
        ops.bsmm(x, values, np.array([0, 1], np.int32), np.array([0, 0], np.int32), n_out=10)


def test_load_ops_is_once_per_process(ops_library: Path, tmp_path: Path) -> None:
    assert ops.load_ops(ops_library) is ops.load_ops(str(ops_library))
    with pytest.raises(RuntimeError, match="already loaded"):
        ops.load_ops(tmp_path / "other.so")


def test_build_without_compiler_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(build.CompilerNotFoundError, match="apt-get install g\\+\\+"):
        build.build_ops([tmp_path / "a.cc"], tmp_path / "lib.so", "-O2", log=lambda line: None)


THREADS_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf

library, threads, workflow_dir, output, isa = sys.argv[1:6]
tf.config.threading.set_intra_op_parallelism_threads(int(threads))
sys.path.insert(0, workflow_dir)
from dynsparse import ops

ops.load_ops(library)
assert ops.kernel_isa() == isa, (ops.kernel_isa(), isa)
rng = np.random.default_rng(0)
results = {}
for bs, n_in, n_out, nnz in ((1, 512, 1024, 150_000), (16, 512, 1024, 600)):
    flat = rng.choice((n_in // bs) * (n_out // bs), size=nnz, replace=False)
    rows = (flat // (n_out // bs)).astype(np.int32)
    cols = (flat % (n_out // bs)).astype(np.int32)
    values = tf.constant(rng.standard_normal((nnz, bs, bs)).astype(np.float32))
    x = tf.constant(rng.standard_normal((200, n_in)).astype(np.float32))
    dy = tf.constant(rng.standard_normal((200, n_out)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch([x, values])
        y = ops.bsmm(x, values, rows, cols, n_out=n_out)
    dx, dvalues = tape.gradient(y, [x, values], output_gradients=dy)
    grad = ops.bsmm_dense_grad(x, dy, block_size=bs, pooling="MAX")
    for name, tensor in (("y", y), ("dx", dx), ("dvalues", dvalues), ("grad", grad)):
        results[f"{name}_bs{bs}"] = tensor.numpy()
np.savez(output, **results)
"""


def test_results_do_not_depend_on_the_thread_count(
    isa: str, ops_library: Path, tmp_path: Path
) -> None:
    script = tmp_path / "run.py"
    script.write_text(THREADS_SCRIPT)
    workflow_dir = Path(ops.__file__).resolve().parents[1]
    outputs = {}
    for threads in (1, 4):
        output = tmp_path / f"threads{threads}.npz"
        command = [sys.executable, str(script), str(ops_library), str(threads)]
        subprocess.run(
            [*command, str(workflow_dir), str(output), isa],
            check=True,
            capture_output=True,
            env={**os.environ, ops.ISA_ENV_VAR: isa},
        )
        outputs[threads] = np.load(output)
    for name in outputs[1].files:
        np.testing.assert_array_equal(outputs[1][name], outputs[4][name], err_msg=name)


def test_sliced_inputs(isa: str) -> None:
    """Slices may share (and offset) their parent's buffer; the kernels accept any alignment."""
    rng = np.random.default_rng(6)
    values, rows, cols = random_pattern(rng, 13, 10, 1, nnz=40)
    parent = tf.constant(rng.standard_normal((11, 13)).astype(np.float32))
    dense = ops.dense_from_blocks(values, rows, cols, (13, 10))
    for x in (parent[1:], tf.split(parent, [3, 8])[1], tf.unstack(parent)[3][tf.newaxis]):
        y = ops.bsmm(x, values, rows, cols, n_out=10)
        np.testing.assert_allclose(y.numpy(), x.numpy() @ dense, rtol=1e-5, atol=1e-5)


def test_patterns_taken_in_turn_by_one_kernel(isa: str) -> None:
    """The kernels cache the grouping of the last pattern; every change must be seen."""
    rng = np.random.default_rng(8)
    n_in, n_out, bs = 64, 32, 4
    x = tf.constant(rng.standard_normal((9, n_in)).astype(np.float32))
    dy = tf.constant(rng.standard_normal((9, n_out)).astype(np.float32))
    patterns = [random_pattern(rng, n_in, n_out, bs, nnz=12) for _ in range(2)]

    @tf.function
    def forward_backward(values: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch([x, values])
            y = ops.bsmm(x, values, rows, cols, n_out=n_out)
        return [y, *tape.gradient(y, [x, values], output_gradients=dy)]

    for values, rows, cols in [*patterns, *patterns, patterns[0]]:
        y, dx, dvalues = forward_backward(tf.constant(values), tf.constant(rows), tf.constant(cols))
        dense = ops.dense_from_blocks(values, rows, cols, (n_in, n_out))
        np.testing.assert_allclose(y.numpy(), x.numpy() @ dense, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(dx.numpy(), dy.numpy() @ dense.T, rtol=1e-5, atol=1e-5)
        dense_grad = x.numpy().T @ dy.numpy()
        blocks = dense_grad.reshape(n_in // bs, bs, n_out // bs, bs).transpose(0, 2, 1, 3)
        np.testing.assert_allclose(dvalues.numpy(), blocks[rows, cols], rtol=1e-4, atol=1e-4)
    assert forward_backward.experimental_get_tracing_count() == 1


def test_isa_variants_agree_and_report_themselves(ops_library: Path) -> None:
    """Every supported variant gives the dense product (up to rounding) and says it is in use."""
    supported = ops.supported_isas()
    assert supported and set(supported) <= set(ops.ISAS)
    assert ops.kernel_isa() == supported[-1]  # the widest, unless DYNSPARSE_ISA says otherwise
    rng = np.random.default_rng(9)
    values, rows, cols = random_pattern(rng, 96, 64, 1, nnz=1500)
    x = rng.standard_normal((21, 96)).astype(np.float32)
    expected = x.astype(np.float64) @ ops.dense_from_blocks(values, rows, cols, (96, 64))
    for isa in supported:
        with ops.using_isa(isa):
            assert ops.kernel_isa() == isa
            y = ops.bsmm(x, values, rows, cols, n_out=64).numpy()
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4, err_msg=isa)
    with pytest.raises(ValueError, match="unknown instruction-set variant"):
        ops.select_isa("sse2")


ISA_ENV_SCRIPT = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from dynsparse import ops

ops.load_ops(sys.argv[1])
ops.bsmm(np.ones((2, 4), np.float32), np.ones((1, 4, 4), np.float32), np.zeros(1, np.int32),
         np.zeros(1, np.int32), n_out=4)
"""


def test_unknown_isa_in_the_environment_fails_with_the_fix(
    ops_library: Path, tmp_path: Path
) -> None:
    script = tmp_path / "run.py"
    script.write_text(ISA_ENV_SCRIPT)
    workflow_dir = Path(ops.__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(script), str(ops_library), str(workflow_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, ops.ISA_ENV_VAR: "sse2"},
    )
    assert result.returncode != 0
    assert "DYNSPARSE_ISA=sse2 is not a variant" in result.stderr


def test_build_turns_off_avx512fp16(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every compile and link command carries -mno-avx512fp16 after the configured flags."""
    commands: list[list[str]] = []
    monkeypatch.setattr(build, "compiler_accepts", lambda compiler, flag: True)
    monkeypatch.setattr(build, "_run", lambda command, log: commands.append(command) or 0.0)
    source = tmp_path / "a.cc"
    source.write_text("int f() { return 1; }\n")
    # The link only "ran": whether the missing library is noticed is not the point here.
    with contextlib.suppress(OSError):
        build.build_ops([source], tmp_path / "lib.so", "-O3 -march=native", log=lambda line: None)
    assert len(commands) == 2
    for command in commands:
        assert command.index(build.NO_FP16_FLAG) > command.index("-march=native")


@pytest.mark.slow
def test_tensorflow_headers_compile_for_an_avx512fp16_cpu() -> None:
    """-march=sapphirerapids enables AVX512-FP16, on which TensorFlow's Eigen fails to compile;
    with the flag the build adds, the kernels' translation unit compiles."""
    compiler = build.find_compiler()
    if not build.compiler_accepts(compiler, build.NO_FP16_FLAG):
        pytest.skip("this g++ does not know AVX512-FP16")
    compile_flags, _ = build.tensorflow_flags()
    source = Path(__file__).resolve().parents[1] / "ops" / "bsmm_kernels.cc"
    command = [compiler, "-fsyntax-only", "-O3", "-march=sapphirerapids", build.NO_FP16_FLAG]
    result = subprocess.run(
        [*command, str(source), *compile_flags, *build.QUIET_FLAGS], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_on_each_isa_runs_once_per_supported_variant(ops_library: Path) -> None:
    before = ops.kernel_isa()
    seen = ops.on_each_isa(ops.kernel_isa)
    assert list(seen) == list(ops.supported_isas())
    assert all(isa == active for isa, active in seen.items())
    assert ops.kernel_isa() == before


# Registers and mnemonics that only AVX-512 (EVEX) code uses.
AVX512_ONLY = re.compile(
    r"zmm|%k[1-7]|[xy]mm(1[6-9]|2[0-9]|3[01])\b|\{1to|vpermt2|vpermi2|vpternlog|vpcompress|"
    r"vexpand|vrndscale|v(insert|extract|broadcast|shuf)[fi](32|64)x|\bkmov|vpmov[qd][bwd]"
)  # \bkmov: AVX's vmaskmovps (the softmax's masked rows under AVX2) is not AVX-512's kmov


def test_avx512_code_only_in_the_avx512_variant(ops_library: Path) -> None:
    """The library must load and run on an AVX2-only CPU: AVX-512 instructions may appear only
    in functions of the dynsparse::avx512 namespace, called after the CPU check."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    listing = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", "-C", str(ops_library)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    function = ""
    outside: set[str] = set()
    inside = 0
    for line in listing.splitlines():
        if line.endswith(">:"):
            function = line
        elif AVX512_ONLY.search(line):
            if "dynsparse::avx512::" in function:
                inside += 1
            else:
                outside.add(function)
    assert inside > 0  # the pattern finds the AVX-512 variant's code
    assert not outside, sorted(outside)[:5]


# --- fused dropout ------------------------------------------------------------------------------


def test_dropout_keeps_the_expected_share_scaled(ops_library: Path) -> None:
    rate = 0.3
    x = tf.constant(np.random.default_rng(0).uniform(1.0, 2.0, size=(64, 320)).astype(np.float32))
    y = ops.dropout(x, rate, tf.random.Generator.from_seed(5)).numpy()
    kept = y != 0
    assert abs(kept.mean() - (1 - rate)) < 0.01
    np.testing.assert_allclose(y[kept], x.numpy()[kept] / (1 - rate), rtol=1e-6)


def test_dropout_is_reproducible_from_the_seed_and_fresh_per_call(ops_library: Path) -> None:
    x = tf.ones((16, 320))

    def two_calls(seed: int) -> tuple[np.ndarray, np.ndarray]:
        generator = tf.random.Generator.from_seed(seed)
        return ops.dropout(x, 0.5, generator).numpy(), ops.dropout(x, 0.5, generator).numpy()

    first, second = two_calls(1)
    again_first, again_second = two_calls(1)
    np.testing.assert_array_equal(first, again_first)
    np.testing.assert_array_equal(second, again_second)
    assert (first != second).mean() > 0.3, "a second call must draw new numbers"
    assert (two_calls(2)[0] != first).mean() > 0.3, "another seed must give another mask"


def test_dropout_gradient_is_the_mask(ops_library: Path) -> None:
    x = tf.constant(np.random.default_rng(1).normal(size=(8, 48)).astype(np.float32))
    generator = tf.random.Generator.from_seed(3)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = ops.dropout(x, 0.25, generator)
        loss = tf.reduce_sum(y * 3.0)
    grad = tape.gradient(loss, x).numpy()
    mask = np.where(y.numpy() != 0, 3.0 / 0.75, 0.0)
    np.testing.assert_allclose(grad, mask, rtol=1e-6)


def test_dropout_rejects_a_rate_of_one(ops_library: Path) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"rate must be in \[0, 1\)"):
        ops.dropout(tf.ones((2, 2)), 1.0, tf.random.Generator.from_seed(0))


# --- fused scaled softmax ------------------------------------------------------------------------


def test_scaled_softmax_passes_the_selftest_checks(isa: str) -> None:
    """Forward and gradient against tf.nn.softmax in float64 on every variant (the self-test's
    shapes: the attention's rows of 28, partial vectors, long rows, -inf entries)."""
    checks = selftest.softmax_checks()
    assert len(checks) == 2 * len(selftest.SOFTMAX_SHAPES)
    failed = {name: check for name, check in checks.items() if not check["passed"]}
    assert not failed, failed


@pytest.mark.parametrize("n", [5, 28, 70])
def test_scaled_softmax_row_is_the_same_wherever_it_is(isa: str, n: int) -> None:
    """Rows go four at a time and the rest one by one: a row's bits must not depend on which,
    nor on the threads' split (the result must not depend on the threads)."""
    x = np.random.default_rng(n).standard_normal((23, n)).astype(np.float32) * 4
    dy = np.random.default_rng(n + 1).standard_normal((23, n)).astype(np.float32)
    module = ops.loaded_ops()
    whole = ops.scaled_softmax(x, 0.5).numpy()
    whole_dx = module.dynsparse_scaled_softmax_grad(whole, dy, scale=0.5).numpy()
    for start in (1, 2, 3, 22):
        part = ops.scaled_softmax(x[start:], 0.5).numpy()
        np.testing.assert_array_equal(part, whole[start:])
        part_dx = module.dynsparse_scaled_softmax_grad(whole[start:], dy[start:], scale=0.5)
        np.testing.assert_array_equal(part_dx.numpy(), whole_dx[start:])


def test_scaled_softmax_gradient_is_registered(ops_library: Path) -> None:
    x = tf.constant(np.random.default_rng(3).standard_normal((4, 28)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = ops.scaled_softmax(x, 0.25)
        loss = tf.reduce_sum(y * tf.range(28, dtype=tf.float32))
    grad = tape.gradient(loss, x).numpy()
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.nn.softmax(x * 0.25) * tf.range(28, dtype=tf.float32))
    np.testing.assert_allclose(grad, tape.gradient(loss, x).numpy(), rtol=1e-4, atol=1e-6)


def test_scaled_softmax_rejects_a_bad_scale(ops_library: Path) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError, match="scale must be a finite number > 0"):
        ops.scaled_softmax(tf.ones((2, 3)), -1.0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="y and dy must have one shape"):
        ops.loaded_ops().dynsparse_scaled_softmax_grad(tf.ones((2, 3)), tf.ones((2, 4)))


# --- fused group norm ---------------------------------------------------------------------------


def test_group_norm_passes_the_selftest_checks(ops_library: Path) -> None:
    """y, dx, dgamma, dbeta against TensorFlow's ops in float64 (the transformer's activations,
    its positional table, odd widths, four axes)."""
    checks = selftest.group_norm_checks()
    assert len(checks) == 4 * len(selftest.GROUP_NORM_SHAPES)
    failed = {name: check for name, check in checks.items() if not check["passed"]}
    assert not failed, failed


def test_group_norm_example_is_the_same_wherever_it_is(ops_library: Path) -> None:
    """An example's outputs do not depend on the other examples (units of the thread pool), and
    dgamma, dbeta are the examples' parts summed in their order."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(9, 28, 96)).astype(np.float32)
    dy = rng.normal(size=(9, 28, 96)).astype(np.float32)
    gamma, beta = rng.normal(size=96).astype(np.float32), rng.normal(size=96).astype(np.float32)
    module = ops.loaded_ops()
    y, mean, rstd = module.dynsparse_group_norm(x, gamma, beta, epsilon=1e-6)
    y_tail, _, _ = module.dynsparse_group_norm(x[3:], gamma, beta, epsilon=1e-6)
    np.testing.assert_array_equal(y_tail.numpy(), y.numpy()[3:])
    dx, dgamma, dbeta = module.dynsparse_group_norm_grad(dy, x, gamma, mean, rstd)
    dx_tail, _, _ = module.dynsparse_group_norm_grad(dy[3:], x[3:], gamma, mean[3:], rstd[3:])
    np.testing.assert_array_equal(dx_tail.numpy(), dx.numpy()[3:])
    parts = [module.dynsparse_group_norm_grad(dy[e:e + 1], x[e:e + 1], gamma, mean[e:e + 1],
                                              rstd[e:e + 1])[1:] for e in range(9)]  # fmt: skip
    summed_gamma, summed_beta = np.zeros(96, np.float32), np.zeros(96, np.float32)
    for part_gamma, part_beta in parts:
        summed_gamma += part_gamma.numpy()
        summed_beta += part_beta.numpy()
    np.testing.assert_array_equal(dgamma.numpy(), summed_gamma)
    np.testing.assert_array_equal(dbeta.numpy(), summed_beta)


def test_group_norm_gradient_reaches_the_variables(ops_library: Path) -> None:
    from dynsparse.models import GroupNorm1

    norm = GroupNorm1(8, "norm")
    x = tf.constant(np.random.default_rng(2).normal(size=(3, 5, 8)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(norm(x) * tf.range(8, dtype=tf.float32))
    dgamma, dbeta = tape.gradient(loss, [norm.gamma, norm.beta])
    np.testing.assert_allclose(dbeta.numpy(), 15.0 * np.arange(8), rtol=1e-6)
    assert np.all(np.isfinite(dgamma.numpy())) and np.any(dgamma.numpy() != 0)


SPLITMIX_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix_finaliser(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def reference_dropout(
    x: np.ndarray, rate: float, counter: int, key: int
) -> tuple[np.ndarray, np.ndarray]:
    """The op's formula (fused_dropout.cc) element by element, in NumPy's wrapping uint64."""
    n = x.size
    as_uint64 = np.array([counter, key], np.int64).view(np.uint64)
    seed = splitmix_finaliser(as_uint64[1:] ^ SPLITMIX_GOLDEN)
    hash_index = as_uint64[0] + np.arange((n + 1) // 2, dtype=np.uint64)
    hashes = splitmix_finaliser(seed + hash_index * SPLITMIX_GOLDEN)
    halves = np.stack([(hashes >> np.uint64(8)) & np.uint64(0xFFFFFF), hashes >> np.uint64(40)], 1)
    threshold = np.ceil(np.float64(np.float32(rate)) * 2**24)
    scale = np.float32(1) / (np.float32(1) - np.float32(rate))
    mask = np.where(halves.ravel()[:n] >= threshold, scale, np.float32(0)).astype(np.float32)
    with np.errstate(invalid="ignore"):  # inf * 0 is NaN, as in the op
        return x * mask.reshape(x.shape), mask.reshape(x.shape)


@pytest.mark.parametrize("shape", [(1,), (17,), (5, 7), (3, 4096 + 5), (896, 96)])
def test_dropout_is_bitwise_the_reference_formula(isa: str, shape: tuple[int, ...]) -> None:
    """Every variant's vector loop, its odd tails and unit boundaries give the scalar formula's
    bits (training results must not depend on the CPU), and the counter advances by the hashes."""
    rng = np.random.default_rng(len(shape) + shape[-1])
    x = rng.normal(size=shape).astype(np.float32)
    x.ravel()[: min(x.size, 3)] = [-0.0, np.inf, -np.inf][: min(x.size, 3)]
    # A key and a counter about to wrap around 2^64, as int64 in the generator's state.
    for counter, key in [(0, 0), (12345, -7), (-3, 2**62 + 1)]:
        for rate in (0.0, 0.1, 0.5, 0.999):
            generator = tf.random.Generator.from_state(
                tf.constant([counter, 0, key], tf.int64), alg="philox"
            )
            y, mask = ops.loaded_ops().dynsparse_dropout(x, generator.state.handle, rate=rate)
            expected_y, expected_mask = reference_dropout(x, rate, counter, key)
            np.testing.assert_array_equal(y.numpy().view(np.uint32), expected_y.view(np.uint32))
            np.testing.assert_array_equal(mask.numpy(), expected_mask)
            advanced = np.array([counter], np.int64).view(np.uint64) + np.uint64((x.size + 1) // 2)
            assert generator.state.numpy()[0] == advanced.view(np.int64)[0]


@pytest.mark.parametrize(
    ("batch", "tokens", "n_in", "parts", "heads", "head_size", "bs"),
    [(4, 9, 24, 1, 2, 8, 1), (2, 28, 48, 3, 2, 16, 8), (3, 7, 32, 2, 3, 16, 16)],
)
def test_heads_layout_is_the_transposed_rows(
    isa: str, batch: int, tokens: int, n_in: int, parts: int, heads: int, head_size: int, bs: int
) -> None:
    """Q, K, V written as [B, heads, T, d] per part, and the gradient read so (unstacked), equal
    the row-major product transposed, bit for bit, for any number of parts."""
    rng = np.random.default_rng(parts * 10 + bs)
    n_out = parts * heads * head_size
    nnz = (n_in // bs) * (n_out // bs) // 3
    values, rows, cols = random_pattern(rng, n_in, n_out, bs, nnz=nnz)
    x = tf.constant(rng.standard_normal((batch, tokens, n_in)).astype(np.float32))
    values_t = tf.constant(values)
    dy = tf.constant(rng.standard_normal((parts, batch, heads, tokens, head_size)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, values_t])
        rows_out = ops.bsmm(x, values_t, rows, cols, n_out=n_out)
        transposed = tf.transpose(
            tf.reshape(rows_out, [batch, tokens, parts, heads, head_size]), [2, 0, 3, 1, 4]
        )
        written = tf.stack(ops.bsmm_heads(x, values_t, rows, cols, n_out, parts, heads))
    expected = [transposed, *tape.gradient(transposed, [x, values_t], output_gradients=dy)]
    got = [written, *tape.gradient(written, [x, values_t], output_gradients=dy)]
    for name, a, b in zip(("y", "dx", "dvalues"), got, expected, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


@pytest.mark.parametrize("rows", [7, 16, 19])
def test_layer_bias_gradient_has_tensorflows_bits(ops_library: Path, rows: int) -> None:
    """BsmmLayer's dbias is TensorFlow's Sum over the rows bit for bit (its summation order: four
    accumulators from 16 rows on, in whole packets of 8 columns), which a plain row-order sum is
    not for this data: the check can tell the orders apart."""
    rng = np.random.default_rng(rows)
    n_in, n_out = 16, 20
    values, block_rows, block_cols = random_pattern(rng, n_in, n_out, 4, 6)
    x = rng.standard_normal((rows, n_in)).astype(np.float32)
    dy = (rng.standard_normal((rows, n_out)) * 10.0 ** rng.integers(-3, 4, (rows, n_out))).astype(
        np.float32
    )
    y = np.ones_like(dy)  # all positive: the ReLU passes every dY through
    _, _, dbias = ops.loaded_ops().bsmm_layer_backward(
        x, dy, y, values, block_rows, block_cols, block_size=4, activation="RELU"
    )
    reference = tf.reduce_sum(tf.constant(dy), axis=0).numpy()
    np.testing.assert_array_equal(dbias.numpy(), reference)
    in_row_order = np.zeros(n_out, np.float32)
    for row in dy:
        in_row_order += row
    if rows >= 16:
        assert not np.array_equal(in_row_order, reference)


@pytest.mark.parametrize(
    ("activation", "dtype"),
    [("none", np.float32), ("relu", np.float32), ("gelu", np.float32), ("gelu", np.float64)],
)
def test_layer_is_the_unfused_layer(isa: str, activation: str, dtype: type) -> None:
    """act(x·W + b) and its gradients from the fused op equal BsmmForward, the bias add and
    TensorFlow's ReLU or exact GELU with TensorFlow's gradients, bit for bit, in a tf.function as
    training runs them (Grappler rewrites GELU's gradient there); rank 3 inputs keep their
    leading shape. The GELU inputs reach every branch of Eigen's erfc; in double, GELU's 1/√2 is
    the float32 constant tf.nn.gelu casts."""
    rng = np.random.default_rng(3)
    values, block_rows, block_cols = random_pattern(rng, 32, 24, 8, 5)
    x = rng.standard_normal((2, 9, 32)).astype(dtype)
    x[1] *= 4  # pre-activations past erfc's clamp too
    x = tf.constant(x)
    bias = tf.constant(rng.standard_normal(24).astype(dtype))
    dy = tf.constant(rng.standard_normal((2, 9, 24)).astype(dtype))
    values_t = tf.constant(values.astype(dtype))
    sources = [x, values_t, bias]

    @tf.function
    def both() -> tuple[list[tf.Tensor], list[tf.Tensor], tf.Tensor]:
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(sources)
            fused = ops.bsmm_layer(x, values_t, block_rows, block_cols, bias, activation)
            pre_activation = ops.bsmm(x, values_t, block_rows, block_cols, n_out=24) + bias
            unfused = activate(pre_activation, activation)
        got = [fused, *tape.gradient(fused, sources, output_gradients=dy)]
        expected = [unfused, *tape.gradient(unfused, sources, output_gradients=dy)]
        return got, expected, pre_activation

    got, expected, pre_activation = both()
    assert got[0].shape == (2, 9, 24)
    if activation == "relu":
        assert 0 < np.count_nonzero(got[0].numpy() == 0) < got[0].numpy().size
    if activation == "gelu":
        erfc_argument = np.abs(pre_activation.numpy()) / np.sqrt(2)
        assert (erfc_argument < 1).any() and (erfc_argument > 1).any()
        assert (erfc_argument > 11).any()  # Eigen clamps here
    for name, a, b in zip(("y", "dx", "dvalues", "dbias"), got, expected, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


def test_layer_gelu_outputs_its_pre_activation(ops_library: Path) -> None:
    """With GELU the op's second output is x·W + b (its gradient's input); else it is empty."""
    rng = np.random.default_rng(4)
    values, block_rows, block_cols = random_pattern(rng, 16, 8, 4, 4)
    x = rng.standard_normal((5, 16)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    module = ops.loaded_ops()
    _, z = module.bsmm_layer(x, values, block_rows, block_cols, bias, block_size=4,
                             activation="GELU")  # fmt: skip
    expected = ops.bsmm(x, values, block_rows, block_cols, n_out=8) + bias
    np.testing.assert_array_equal(z.numpy(), expected.numpy())
    _, empty = module.bsmm_layer(x, values, block_rows, block_cols, bias, block_size=4,
                                 activation="RELU")  # fmt: skip
    assert empty.shape == (0, 8)


def test_layer_rejects_an_unknown_activation(ops_library: Path) -> None:
    with pytest.raises(ValueError, match="unknown activation 'swish' for a sparse layer"):
        ops.bsmm_layer(np.ones((2, 4), np.float32), np.ones((1, 4, 4), np.float32), [0], [0],
                       np.zeros(4, np.float32), "swish")  # fmt: skip
