"""The op benchmark runs a tiny sweep and writes the documented columns (no timing checks)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from dynsparse import bench, ops


def test_tiny_sweep_writes_csv_plot_and_table(ops_library: Path, tmp_path: Path) -> None:
    rows = bench.bench_ops("tiny", repeats=2)
    assert len(rows) == len(bench.bench_ops_cases("tiny"))
    csv_path, plot_path = tmp_path / "ops.csv", tmp_path / "ops.png"
    bench.write_bench_ops_csv(rows, csv_path)
    bench.plot_bench_ops(rows, plot_path)
    with csv_path.open() as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == bench.BENCH_OPS_COLUMNS
        written = list(reader)
    assert len(written) == len(rows)
    for row in written:
        for column in bench.BENCH_OPS_COLUMNS:
            if column.endswith("_ms") or "speedup" in column:
                assert float(row[column]) > 0, column
        assert row["isa"] == ops.kernel_isa() and row["cpu"] and int(row["threads"]) >= 1
        assert int(row["loop_reps"]) >= bench.LOOP_REPS[0]
    assert plot_path.stat().st_size > 0
    table = bench.bench_ops_table(rows)
    assert "fwd/dense" in table and len(table.splitlines()) == len(rows) + 4


def test_a_variant_over_its_time_budget_stops_at_the_minimum_repeats(
    ops_library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slow baselines (tf.sparse at 2048^2) stop sampling once over budget, never below the
    minimum; the others take every repeat."""
    assert bench.keeps_sampling(1e9, bench.MIN_REPEATS - 1)
    assert not bench.keeps_sampling(bench.VARIANT_SECONDS, bench.MIN_REPEATS)
    assert bench.keeps_sampling(0.0, 100)
    case = bench.OpBenchCase(4, 32, 16, 0.25, 1)
    row = bench.bench_ops_case(case, repeats=bench.MIN_REPEATS + 2)
    assert row["repeats"] == row["fewest_repeats"] == bench.MIN_REPEATS + 2
    monkeypatch.setattr(bench, "VARIANT_SECONDS", 0.0)
    row = bench.bench_ops_case(case, repeats=bench.MIN_REPEATS + 2)
    assert row["repeats"] == row["fewest_repeats"] == bench.MIN_REPEATS


def test_sweeps_contain_the_target_shapes() -> None:
    quick = bench.bench_ops_cases("quick")
    full = bench.bench_ops_cases("full")
    for case in bench.OP_TARGETS:
        assert case in quick and case in full
    assert len(full) > len(quick)
    with pytest.raises(ValueError, match="unknown op benchmark sweep"):
        bench.bench_ops_cases("huge")


def test_loop_runs_every_repetition(ops_library: Path) -> None:
    """The compiled loop must not be cut short: n repetitions take about n times one."""
    import time

    import tensorflow as tf

    x = tf.constant(np.ones((64, 256), np.float32))
    w = tf.Variable(np.ones((256, 256), np.float32))
    _, loop = bench._compiled(lambda i: [tf.matmul(x, w)])
    loop(2)
    times = {20: float("inf"), 200: float("inf")}
    for _ in range(3):  # the fastest of three: a busy machine only ever adds time
        for n in times:
            start = time.perf_counter()
            loop(n).numpy()
            times[n] = min(times[n], time.perf_counter() - start)
    assert float(loop(7).numpy()) == 7 * 256.0  # 7 repetitions, each y[0, 0] = 256
    assert times[200] > 4 * times[20]


def test_bench_threads_never_exceed_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--cores 4` on a 2-core machine must benchmark dense and sparse on 2 threads."""
    monkeypatch.setattr(bench.os, "sched_getaffinity", lambda _pid: {0, 1})
    assert bench.bench_threads(4) == 2
    assert bench.bench_threads(1) == 1
    assert bench.bench_threads(0) == 1


def test_fwdbwd_variants_output_the_forward(ops_library: Path) -> None:
    """A forward whose output no timed output reads is pruned from the compiled graph: each
    forward+backward variant must return the forward's y (as the forward variant computes it)
    beside dX and dW, or it would time the backward only."""
    bodies, _ = bench._timed_bodies(bench.OpBenchCase(8, 32, 16, 0.25, 1))
    for prefix in ("ours", "dense", "masked"):
        forward = bodies[f"{prefix}_fwd"](0)[0].numpy()
        outputs = bodies[f"{prefix}_fwdbwd"](0)
        assert len(outputs) == 3, prefix
        np.testing.assert_array_equal(outputs[0].numpy(), forward)
        assert outputs[1].shape == (8, 32)
    ours_new = bodies["ours_fwdbwd_new_pattern"](1)
    assert len(ours_new) == 3 and ours_new[0].shape == (8, 16)
