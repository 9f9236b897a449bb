"""Results table and figures from generated summaries and histories."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from dynsparse.report import markdown_html, markdown_page
from dynsparse.stats import t_quantile
from dynsparse.summary import (
    SummaryOutputs,
    aggregate_rows,
    load_results,
    sample_groups,
    smoothed_accuracy,
    summarize,
)
from fake_records import fc_records, history_arrays, transformer_records, write_sample

CONFIG = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())


def _run_settings(model: str) -> dict:
    """A model's defaults as one training job's settings.json carries them (one seed)."""
    defaults = {k: v for k, v in CONFIG[model]["defaults"].items() if k not in ("seeds",)}
    return {**defaults, "seed": 1}


FC = {**_run_settings("fc"), "densities": [0.1, 0.3], "hidden_size": 64, "epochs": 2}
TRANSFORMER = {
    **_run_settings("transformer"),
    "sparsity": 0.5,
    "block_size": 4,
    "pooling": "SUM",
    "updates_per_epoch": 2,
    "epochs": 2,
}
SAMPLES = [
    ("fc", "rigl", FC),
    ("fc", "static", {**FC, "method": "static"}),
    ("fc", "dense", {**FC, "densities": [1.0, 1.0]}),
    ("fc", "rigl_b16", {**FC, "block_size": 16, "pooling": "SUM"}),
    ("transformer", "rigl_s0.5", TRANSFORMER),
    ("transformer", "dense", {**TRANSFORMER, "sparsity": 0.0}),
]


def write_results(root: Path) -> tuple[list[Path], list[Path]]:
    summaries, histories = [], []
    for seed, (model, sample, settings) in enumerate(SAMPLES):
        if model == "fc":
            records = fc_records(densities=tuple(settings["densities"]), n_updates=2)
        else:
            records = transformer_records(sparsity=settings["sparsity"], n_updates=2)
        history = history_arrays(epochs=2, batches_per_epoch=50, final_accuracy=0.9 + seed / 100)
        folder = write_sample(root / model / sample, model, sample, settings, records, history)
        summaries.append(folder / "summary.json")
        histories.append(folder / "history.npz")
    return summaries, histories


def outputs(folder: Path) -> SummaryOutputs:
    return SummaryOutputs(
        table_csv=folder / "table.csv",
        table_md=folder / "table.md",
        accuracy_png=folder / "accuracy_vs_density.png",
        accuracy_svg=folder / "accuracy_vs_density.svg",
        curves_png=folder / "curves.png",
        curves_svg=folder / "curves.svg",
        table_html=folder / "table.html",
    )


def test_summarize_writes_table_and_figures(tmp_path: Path) -> None:
    summaries, histories = write_results(tmp_path / "results")
    bench = tmp_path / "results" / "bench"
    bench.mkdir()
    (bench / "ops.csv").write_text("case,ms\nfc1,0.5\n")
    out = tmp_path / "results" / "summary"
    summarize(summaries, histories, outputs(out), [bench / "ops.csv", bench / "ops.png"])

    rows = list(csv.DictReader((out / "table.csv").read_text().splitlines()))
    assert [(r["model"], r["sample"], r["method"]) for r in rows] == [
        ("fc", "dense", "dense"),
        ("fc", "static", "static"),
        ("fc", "rigl", "rigl"),
        ("fc", "rigl_b16", "rigl"),
        ("transformer", "dense", "dense"),
        ("transformer", "rigl_s0.5", "rigl"),
    ]
    rigl = rows[2]
    history = np.load(histories[0])
    assert float(rigl["final_test_accuracy"]) == pytest.approx(history["test_accuracy"][-1])
    # The test accuracy at the best validation epoch (the first), not the best test epoch.
    assert float(rigl["best_test_accuracy"]) == pytest.approx(history["test_accuracy"][0])
    assert history["test_accuracy"][0] < history["test_accuracy"].max()
    assert rigl["n"] == "1" and rigl["final_test_accuracy_ci_low"] == ""
    assert rigl["baseline"] == "dense" and rows[0]["baseline"] == ""
    assert rigl["sparsity_setting"] == "densities 0.1/0.3" and rigl["pooling"] == "NONE"
    assert float(rigl["weight_density"]) == pytest.approx((0.1 * 784 + 0.3 * 10) / 794, abs=1e-6)
    assert rows[0]["sparse_nonzeros"] == "" and int(rigl["sparse_nonzeros"]) > 0
    assert rows[5]["sparsity_setting"] == "sparsity 0.5" and rows[5]["block_size"] == "4"

    markdown = (out / "table.md").read_text()
    assert "| fc | rigl | rigl | densities 0.1/0.3 |" in markdown
    assert "(n=1)" in markdown
    assert "## Benchmarks" in markdown and "| fc1 | 0.5 |" in markdown
    assert "<td>rigl_b16</td>" in (out / "table.html").read_text()
    for name in ("accuracy_vs_density", "curves"):
        assert (out / f"{name}.png").read_bytes().startswith(b"\x89PNG")
        assert b"<svg" in (out / f"{name}.svg").read_bytes()[:1000]


def test_groups_put_dense_beside_each_sparse_setting(tmp_path: Path) -> None:
    results = load_results(*write_results(tmp_path))
    groups = {title: [r.sample for r in members] for title, members in sample_groups(results)}
    assert groups == {
        "fc, densities 0.1/0.3": ["dense", "static", "rigl", "rigl_b16"],
        "transformer, sparsity 0.5": ["dense", "rigl_s0.5"],
    }


def test_smoothing_averages_each_rigl_step(tmp_path: Path) -> None:
    results = load_results(*write_results(tmp_path))
    rigl = next(r for r in results if r.sample == "rigl")
    x, y = smoothed_accuracy(rigl)  # 50 batches per epoch, 5 updates per epoch: windows of 10
    assert x.tolist() == list(range(10, 101, 10))
    assert y[0] == pytest.approx(rigl.history["accuracy"][:10].mean())


def test_mismatched_inputs_are_rejected(tmp_path: Path) -> None:
    summaries, histories = write_results(tmp_path)
    with pytest.raises(ValueError, match="not beside"):
        load_results(summaries[:2], histories[1:3])


def test_markdown_subset_to_html() -> None:
    html = markdown_html("# Title\n\nSome `code` & text\n\n| a | b\\|c |\n|---|---|\n| 1 | 2 |\n")
    assert "<h1>Title</h1>" in html and "<code>code</code> &amp; text" in html
    assert "<th>b|c</th>" in html and "<td>1</td><td>2</td>" in html
    assert markdown_page("T", "x").startswith("<!DOCTYPE html>")


def write_seeds(root: Path, sample: str, settings: dict, finals: dict[int, float]) -> list[Path]:
    folders = []
    for seed, final in finals.items():
        history = history_arrays(epochs=2, batches_per_epoch=20, final_accuracy=final)
        history["test_accuracy"] = np.array([final - 0.01, final])
        folders.append(
            write_sample(
                root / "fc" / sample / f"seed{seed}",
                "fc",
                sample,
                {**settings, "seed": seed},
                fc_records(densities=tuple(settings["densities"]), n_updates=2),
                history,
            )
        )
    return folders


def test_rows_aggregate_seeds_and_pair_with_the_named_baseline(tmp_path: Path) -> None:
    rigl = write_seeds(tmp_path, "rigl", FC, {1: 0.98, 2: 0.97, 3: 0.99})
    static = write_seeds(
        tmp_path, "static", {**FC, "method": "static"}, {1: 0.96, 2: 0.96, 3: 0.95}
    )
    folders = rigl + static
    results = load_results(
        [f / "summary.json" for f in folders], [f / "history.npz" for f in folders]
    )
    rows = {r["sample"]: r for r in aggregate_rows(results, {"fc/rigl": "fc/static"})}
    row = rows["rigl"]
    # By hand: mean 0.98, sample std 0.01, half-width t(0.975, 2) * 0.01 / sqrt(3).
    half = t_quantile(0.975, 2) * 0.01 / np.sqrt(3)
    assert row["n"] == 3 and row["seeds"] == "1 2 3"
    assert row["final_test_accuracy"] == pytest.approx(0.98)
    assert row["final_test_accuracy_std"] == pytest.approx(0.01)
    assert row["final_test_accuracy_ci_low"] == pytest.approx(0.98 - half)
    assert row["final_test_accuracy_ci_high"] == pytest.approx(0.98 + half)
    assert (row["final_test_accuracy_min"], row["final_test_accuracy_max"]) == (0.97, 0.99)
    # Paired differences by seed: 0.02, 0.01, 0.04 -> mean 0.07/3, std 0.0152753.
    differences = np.array([0.02, 0.01, 0.04])
    paired_half = t_quantile(0.975, 2) * differences.std(ddof=1) / np.sqrt(3)
    assert row["baseline"] == "static" and row["difference_n"] == 3
    assert row["difference"] == pytest.approx(differences.mean())
    assert row["difference_ci_low"] == pytest.approx(differences.mean() - paired_half)
    assert "vs static (n=3)" in row["difference_text"]
    # No dense sample and no named baseline: nothing to compare with.
    assert rows["static"]["baseline"] == "" and rows["static"]["difference"] is None


def test_a_seed_only_one_side_has_is_left_out_of_the_pairing(tmp_path: Path) -> None:
    folders = write_seeds(tmp_path, "rigl", FC, {1: 0.98, 2: 0.97})
    folders += write_seeds(tmp_path, "dense", {**FC, "densities": [1.0, 1.0]}, {1: 0.99})
    results = load_results(
        [f / "summary.json" for f in folders], [f / "history.npz" for f in folders]
    )
    rows = {r["sample"]: r for r in aggregate_rows(results)}
    assert rows["rigl"]["baseline"] == "dense" and rows["rigl"]["difference_n"] == 1
    assert rows["rigl"]["difference"] == pytest.approx(-0.01)
