"""The README's results and benchmark tables come from the generator (`make readme`)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from dynsparse.readme import (
    GROW_FRAMES,
    GROW_SAMPLES,
    SECTIONS,
    begin_marker,
    end_marker,
    format_problems,
    grow_frame,
    section_text,
    update_readme,
)

REPO = Path(__file__).resolve().parents[1]


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def empty_readme(tmp_path: Path) -> Path:
    """A README holding every generated section, empty."""
    readme = tmp_path / "README.md"
    readme.write_text("".join(f"{begin_marker(n)}\n{end_marker(n)}\n" for n in SECTIONS))
    return readme


def updated_section(tmp_path: Path, results: Path, section: str) -> tuple[str, str]:
    """The README (every section empty) after `update_readme`, and one section's text."""
    text = update_readme(empty_readme(tmp_path), results, cpu="Test CPU, 2 cores")
    return text, section_text(text, section)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    write_csv(
        root / "summary/table.csv",
        [
            # A column the generator does not know (a helper added it) is ignored; one it knows
            # but this CSV lacks (best_test_accuracy) is left out.
            {"model": "fc", "sample": "rigl_a", "method": "rigl", "sparsity_setting": "d 0.1",
             "block_size": "1", "pooling": "NONE", "epochs": "40", "final_test_accuracy": "0.9824",
             "train_seconds": "52.66", "throughput": "45548.2", "new_column": "x"},
        ],
    )  # fmt: skip
    write_csv(
        root / "bench/training.csv",
        [{"model": "fc", "case": "dense", "block_size": "1", "batch_size": "16",
          "samples_per_second": "24000", "speedup_vs_dense": "1", "held_floats_vs_dense": "nan"}],
    )  # fmt: skip
    return root


def test_the_generator_writes_tables_between_the_markers(results: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\nhand text\n\n"
        f"{begin_marker('results')}\nold numbers\n{end_marker('results')}\n\nmore hand text\n\n"
        f"{begin_marker('sweep')}\n{end_marker('sweep')}\n"
        f"{begin_marker('literature')}\n{end_marker('literature')}\n"
        f"{begin_marker('grow_batches')}\n{end_marker('grow_batches')}\n"
        f"{begin_marker('bench')}\n{end_marker('bench')}\n"
    )
    text = update_readme(readme, results, cpu="Test CPU, 2 cores")
    assert section_text(text, "sweep").startswith("No density sweep in this tree")
    body = section_text(text, "results")
    assert body.startswith("Measured on Test CPU, 2 cores; run finished ")
    assert "| fc | rigl_a | rigl | d 0.1 | 1 | NONE | 40 | 98.24% | 52.7 | 45,548 |" in body
    assert "best epoch" not in body and "new_column" not in body and "old numbers" not in text
    bench = section_text(text, "bench")
    assert "| fc | dense | 1 | 16 | 24,000 | 1.00× | – |" in bench and "ops.csv" not in bench
    assert "hand text" in text and "more hand text" in text
    assert format_problems(text) == []
    assert update_readme(readme, results, cpu="Test CPU, 2 cores") == text  # idempotent


def test_replicated_rows_show_the_interval_and_the_paired_difference(
    results: Path, tmp_path: Path
) -> None:
    row = {"model": "fc", "sample": "rigl", "method": "rigl", "n": "3",
           "final_test_accuracy": "0.981", "final_test_accuracy_ci_low": "0.979",
           "final_test_accuracy_ci_high": "0.983", "final_test_accuracy_min": "0.98",
           "final_test_accuracy_max": "0.982", "baseline": "static", "difference": "0.006",
           "difference_ci_low": "0.002", "difference_ci_high": "0.010"}  # fmt: skip
    write_csv(results / "summary/table.csv", [row])
    write_csv(results / "density-sweep/summary/table.csv", [row])
    readme = empty_readme(tmp_path)
    text = update_readme(readme, results, cpu="Test CPU, 2 cores")
    line = "| fc | rigl | rigl | 3 | 98.10 ± 0.20% | 98.00% | 98.20% | +0.60 ± 0.40 pp vs static |"
    assert line in section_text(text, "results")
    sweep = section_text(text, "sweep")
    assert "results/density-sweep/summary/accuracy_vs_density.png" in sweep and line in sweep
    assert format_problems(text) == []


def test_a_hand_edited_table_is_caught() -> None:
    readme = f"{begin_marker('results')}\n| model | accuracy (typed) |\n{end_marker('results')}\n"
    readme += f"{begin_marker('sweep')}\nNo density sweep in this run.\n{end_marker('sweep')}\n"
    readme += f"{begin_marker('literature')}\nNo literature run.\n{end_marker('literature')}\n"
    readme += f"{begin_marker('grow_batches')}\nNo run.\n{end_marker('grow_batches')}\n"
    readme += f"{begin_marker('bench')}\nNo benchmarks in this run.\n{end_marker('bench')}\n"
    problems = format_problems(readme)
    assert any("does not start as the generator writes it" in p for p in problems)


def test_the_readme_is_in_step_with_the_generator() -> None:
    assert format_problems((REPO / "README.md").read_text()) == []


def test_the_literature_table_puts_the_published_figure_beside_ours(
    results: Path, tmp_path: Path
) -> None:
    rows = [
        {"sample": "snfs_0.1", "method": "snfs", "weight_density": "0.1", "n": "3",
         "final_test_accuracy": "0.9812", "final_test_accuracy_ci_low": "0.9802",
         "final_test_accuracy_ci_high": "0.9822"},
        {"sample": "rigl_0.1", "method": "rigl", "weight_density": "0.1", "n": "3",
         "final_test_accuracy": "0.98"},
    ]  # fmt: skip
    write_csv(results / "literature/summary/table.csv", rows)
    text, body = updated_section(tmp_path, results, "literature")
    assert "| snfs_0.1 | snfs | 0.100 | 3 | 98.12 ± 0.10% | 98.67% |" in body
    assert "| rigl_0.1 | rigl | 0.100 | 3 | 98.00% | – |" in body
    assert "Dettmers & Zettlemoyer 2019" in body and format_problems(text) == []


def test_a_section_without_results_keeps_its_text(results: Path, tmp_path: Path) -> None:
    """A run of one example config rewrites only its own section: the others keep the tables
    of their last run (an empty one gets the "No ..." line); a missing marker is still an error."""
    readme = empty_readme(tmp_path)
    kept = "Measured on Other CPU; run finished 2026-01-01 00:00 UTC.\n\n| sample |\n|---|"
    text = readme.read_text().replace(
        f"{begin_marker('sweep')}\n", f"{begin_marker('sweep')}\n{kept}\n"
    )
    readme.write_text(text)
    text = update_readme(readme, results, cpu="Test CPU, 2 cores")
    assert section_text(text, "sweep") == kept
    assert section_text(text, "literature").startswith("No literature run in this tree")
    assert section_text(text, "results").startswith("Measured on Test CPU")
    assert update_readme(readme, results, cpu="Test CPU, 2 cores") == text
    readme.write_text(text.replace(end_marker("literature"), ""))
    with pytest.raises(ValueError, match="literature"):
        update_readme(readme, results, cpu="Test CPU, 2 cores")


def test_the_literature_table_puts_dense_then_90_then_70_percent(
    results: Path, tmp_path: Path
) -> None:
    def row(sample: str, method: str, density: str) -> dict:
        return {"sample": sample, "method": method, "weight_density": density, "n": "3",
                "final_test_accuracy": "0.98"}  # fmt: skip

    # The summary's order: by method, then sample.
    write_csv(
        results / "literature/summary/table.csv",
        [row("dense", "dense", "1.0"), row("static_0.1", "static", "0.1"),
         row("static_0.3", "static", "0.3"), row("set_0.1", "set", "0.1"),
         row("set_0.3", "set", "0.3")],
    )  # fmt: skip
    text, body = updated_section(tmp_path, results, "literature")
    samples = [line.split("|")[1].strip() for line in body.splitlines()[4:]]
    assert samples == ["dense", "static_0.1", "set_0.1", "static_0.3", "set_0.3"]
    assert "| set_0.3 | set | 0.300 | 3 | 98.00% | – |" in body  # no published 70 % figure
    assert "no 70 % figures are published" in body and format_problems(text) == []


def test_the_grow_batches_section_shows_both_frames_side_by_side(
    results: Path, tmp_path: Path
) -> None:
    (g1, n1), (g10, n10) = GROW_SAMPLES.items()
    rows = [
        {"sample": g1, "method": "rigl", "epochs": "20", "n": "3", "final_test_accuracy": "0.98",
         "baseline": "", "difference": "", "difference_ci_low": "", "difference_ci_high": ""},
        {"sample": g10, "method": "rigl", "epochs": "20", "n": "3", "final_test_accuracy": "0.981",
         "baseline": g1, "difference": "0.001", "difference_ci_low": "-0.001",
         "difference_ci_high": "0.003"},
    ]  # fmt: skip
    write_csv(results / "grow-batches/summary/table.csv", rows)
    text, body = updated_section(tmp_path, results, "grow_batches")
    assert f"| {g1} | {n1} | 20 | 3 | 98.00% |" in body
    assert f"| {g10} | {n10} | 20 | 3 | 98.10% | +0.10 ± 0.20 pp vs {g1} |" in body
    assert "No frames 50, 100 of both samples" in body and format_problems(text) == []
    for sample in GROW_SAMPLES:
        for frame in GROW_FRAMES:
            path = tmp_path / grow_frame(sample, frame)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"png")
    _, body = updated_section(tmp_path, results, "grow_batches")
    assert f"| frame | grow_batches: {n1} | grow_batches: {n10} |" in body
    for frame in GROW_FRAMES:
        images = f"| {frame} | ![frame {frame}, grow_batches {n1}]({grow_frame(g1, frame)}) | "
        assert images + f"![frame {frame}, grow_batches {n10}]({grow_frame(g10, frame)}) |" in body
    assert grow_frame(g1, 50) == f"results/grow-batches/fc/{g1}/frames/frame_000050.png"
