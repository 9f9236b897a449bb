"""End to end: the real workflow on the tiny config, then what a change reruns (and nothing more).

The tests share one scratch copy of the repository on which the `workdir` fixture has run the
whole workflow once; each test then dry-runs after one edit, undone before it returns, so the
tests pass in any order or alone. The first test plans a run in a second, untouched copy.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from pipeline_helpers import (
    cached_mnist,
    make_workdir,
    planned_jobs,
    read_config,
    snakemake,
    write_config,
)

pytestmark = pytest.mark.slow

FC = "model=fc, sample=tiny_fc"
TF = "model=transformer, sample=tiny_tf"
SWEPT = ("model=fc, sample=m_static", "model=fc, sample=m_random")
# tiny.yaml's seeds: tiny_fc has [3, 4], everything else the defaults' seed.
SEEDS = {FC: (3, 4), TF: (5,), SWEPT[0]: (3,), SWEPT[1]: (3,)}
PICTURE_RULES = ("extract_records", "render_frames", "assemble_gif")


def train_job(wildcards: str, seed: int) -> str:
    return f"train[{wildcards}, seed={seed}]"


def per_sample_jobs(wildcards: str) -> list[str]:
    """A sample's training jobs (one per seed) and its first seed's pictures."""
    trains = [train_job(wildcards, seed) for seed in SEEDS[wildcards]]
    return trains + [f"{rule}[{wildcards}]" for rule in PICTURE_RULES]


def every_sample_job() -> list[str]:
    return [job for wildcards in SEEDS for job in per_sample_jobs(wildcards)]


@pytest.fixture(scope="module")
def fresh_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy where nothing has run yet."""
    return make_workdir(tmp_path_factory.mktemp("pipeline-fresh"), cached_mnist())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy after one full run of the workflow."""
    path = make_workdir(tmp_path_factory.mktemp("pipeline"), cached_mnist())
    snakemake(path)
    return path


@pytest.fixture
def restore_config(workdir: Path) -> Iterator[dict]:
    original = read_config(workdir)
    yield read_config(workdir)
    write_config(workdir, original)


def test_dry_run_lists_every_expected_job(fresh_workdir: Path) -> None:
    assert planned_jobs(fresh_workdir) == sorted(
        [
            "all[]",
            "build_ops[]",
            "fetch_mnist[]",
            "selftest_ops[]",
            "summarize[]",
            *every_sample_job(),
        ]
    )


def test_full_run_writes_every_output_and_a_report(workdir: Path) -> None:
    selftest = json.loads((workdir / "results/selftest/ops.json").read_text())
    assert selftest["passed"] and selftest["cases"]
    # Chance is 0.1; the tiny runs see a few thousand images once.
    minimum_accuracy = {"fc": 0.7, "transformer": 0.3}
    samples = (
        ("fc", "tiny_fc"),
        ("fc", "m_static"),
        ("fc", "m_random"),
        ("transformer", "tiny_tf"),
    )
    for model, sample in samples:
        folder = workdir / "results" / model / sample
        seeds = SEEDS[f"model={model}, sample={sample}"]
        for seed in seeds:
            summary = json.loads((folder / f"seed{seed}" / "summary.json").read_text())
            assert summary["final_test_accuracy"] > minimum_accuracy[model], summary
            assert summary["seed"] == seed and summary["sample"] == sample
            assert summary["validation_images"] == 2000
            with np.load(folder / f"seed{seed}" / "history.npz") as history:
                assert np.all(history["validation_accuracy"] > minimum_accuracy[model])
        with np.load(folder / f"seed{seeds[0]}" / "records.npz") as records:
            assert len(records["update_index"]) >= 2
        frames = sorted((folder / "frames").glob("*.png"))
        gif = iio.imread(folder / "connectivity.gif", index=None)
        assert len(frames) == gif.shape[0] >= 2
        assert (folder / "initial_vs_final.png").stat().st_size > 0
    assert not (workdir / "results/fc/tiny_fc/seed4/frames").exists()
    with open(workdir / "results/summary/table.csv") as stream:
        rows = {row["sample"]: row for row in csv.DictReader(stream)}
    assert sorted(rows) == ["m_random", "m_static", "tiny_fc", "tiny_tf"]
    two_seeds = rows["tiny_fc"]
    assert two_seeds["n"] == "2" and two_seeds["seeds"] == "3 4"
    low, high = (
        float(two_seeds["final_test_accuracy_ci_low"]),
        float(two_seeds["final_test_accuracy_ci_high"]),
    )
    assert low < float(two_seeds["final_test_accuracy"]) < high
    assert rows["tiny_tf"]["n"] == "1" and rows["tiny_tf"]["final_test_accuracy_ci_low"] == ""

    snakemake(workdir, "--report", "report.html")
    report = (workdir / "report.html").read_text()
    for name in ("table.html", "accuracy_vs_density.png", "curves.png", "connectivity.html"):
        assert name in report, name
    assert_animations_render(workdir / "report.html", expected=len(SEEDS))


def assert_animations_render(report: Path, expected: int) -> None:
    """Each sample's page in the real report, opened in headless Chromium as a user would."""
    from report_browser import Browser, find_chromium, report_results, show_result

    if find_chromium() is None and not os.environ.get("DYNSPARSE_BROWSER_REQUIRED"):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with Browser() as browser:
        browser.open(report)
        pages = report_results(browser, "connectivity.html")
        assert len(pages) == expected, pages
        for page in pages:
            shown = show_result(browser, page)
            assert shown.all_images_decoded and len(shown.images) == 2, shown
            assert shown.coloured_fraction > 0.05, shown


def test_second_run_does_nothing(workdir: Path) -> None:
    assert planned_jobs(workdir) == []


def test_editing_one_sample_reruns_only_that_sample(workdir: Path, restore_config: dict) -> None:
    restore_config["fc"]["samples"]["tiny_fc"]["droprate"] = 0.2
    write_config(workdir, restore_config)
    assert planned_jobs(workdir) == sorted(["all[]", "summarize[]", *per_sample_jobs(FC)])


def test_adding_a_seed_runs_only_its_training_and_the_summary(
    workdir: Path, restore_config: dict
) -> None:
    restore_config["fc"]["samples"]["tiny_fc"]["seeds"] = [3, 4, 7]
    write_config(workdir, restore_config)
    assert planned_jobs(workdir) == sorted(["all[]", "summarize[]", train_job(FC, 7)])


def test_removing_a_seed_reruns_only_the_summary(workdir: Path, restore_config: dict) -> None:
    restore_config["fc"]["samples"]["tiny_fc"]["seeds"] = [3]
    write_config(workdir, restore_config)
    assert planned_jobs(workdir) == ["all[]", "summarize[]"]


def test_a_sweep_point_is_a_sample_like_a_written_one(workdir: Path, restore_config: dict) -> None:
    restore_config["fc"]["sweeps"]["m"]["grid"]["method"] = ["static", "random", "rigl"]
    write_config(workdir, restore_config)
    new = "model=fc, sample=m_rigl"
    expected = [train_job(new, 3), *(f"{rule}[{new}]" for rule in PICTURE_RULES)]
    assert planned_jobs(workdir) == sorted(["all[]", "summarize[]", *expected])


def test_adding_a_sample_adds_only_its_jobs(workdir: Path, restore_config: dict) -> None:
    restore_config["fc"]["samples"]["tiny_fc_static"] = {"method": "static"}
    write_config(workdir, restore_config)
    new = "model=fc, sample=tiny_fc_static"
    expected = [train_job(new, 3), *(f"{rule}[{new}]" for rule in PICTURE_RULES)]
    assert planned_jobs(workdir) == sorted(["all[]", "summarize[]", *expected])


def test_changing_the_colormap_reruns_only_the_pictures(
    workdir: Path, restore_config: dict
) -> None:
    restore_config["render"]["cmap"] = "viridis"
    restore_config["render"]["gif_delay"] = 35
    write_config(workdir, restore_config)
    expected = [f"{rule}[{wc}]" for rule in ("render_frames", "assemble_gif") for wc in SEEDS]
    assert planned_jobs(workdir) == sorted(["all[]", *expected])


def test_editing_a_library_module_reruns_its_stages(workdir: Path) -> None:
    module = workdir / "workflow/dynsparse/gif.py"
    original, stat = module.read_text(), module.stat()
    try:
        module.write_text(original + "\n# an edit\n")
        assert planned_jobs(workdir) == sorted(["all[]", *(f"assemble_gif[{wc}]" for wc in SEEDS)])
    finally:
        module.write_text(original)
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert planned_jobs(workdir) == []


def test_touching_an_op_source_reruns_nothing(workdir: Path) -> None:
    """Reruns follow content: a newer time stamp on the same bytes is not a change."""
    source = sorted((workdir / "ops").glob("*.cc"))[0]
    stat = source.stat()
    try:
        source.touch()
        assert planned_jobs(workdir) == []
    finally:
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_editing_an_op_source_rebuilds_and_reruns_downstream(workdir: Path) -> None:
    source = sorted((workdir / "ops").glob("*.cc"))[0]
    original, stat = source.read_text(), source.stat()
    try:
        source.write_text(original + "\n// an edit\n")
        assert planned_jobs(workdir) == sorted(
            [
                "all[]",
                "build_ops[]",
                "selftest_ops[]",
                "summarize[]",
                *every_sample_job(),
            ]
        )
    finally:
        source.write_text(original)
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert planned_jobs(workdir) == []


def test_a_failed_build_keeps_the_library_and_a_reverted_flag_plans_nothing(
    workdir: Path, restore_config: dict
) -> None:
    (library,) = (workdir / "build/ops").glob("*/libdynsparse_ops.so")
    good, flags = library.read_bytes(), restore_config["ops"]["cxxflags"]
    restore_config["ops"]["cxxflags"] = "-O2 -mno-such-flag"
    write_config(workdir, restore_config)
    failed = snakemake(workdir, check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert output.count("config key ops.cxxflags") == 1, output[-3000:]
    assert "Traceback" not in output and "concurrent.futures" not in output
    assert library.read_bytes() == good
    assert sorted(p.name for p in (workdir / "build/ops").glob("*/*.so")) == [library.name]
    restore_config["ops"]["cxxflags"] = flags
    write_config(workdir, restore_config)
    assert planned_jobs(workdir) == []


def test_refetching_identical_data_retrains_nothing(workdir: Path) -> None:
    record = workdir / "data/mnist.npz.sha256"
    before = record.read_text()
    assert planned_jobs(workdir, "--forcerun", "fetch_mnist") == ["all[]", "fetch_mnist[]"]
    snakemake(workdir, "--forcerun", "fetch_mnist")
    assert record.read_text() == before
    assert planned_jobs(workdir) == []


def test_damaged_data_is_named_and_deleting_it_refetches_only(workdir: Path) -> None:
    mnist = workdir / "data/mnist.npz"
    expected = (workdir / "data/mnist.npz.sha256").read_text().split()[0]
    with open(mnist, "r+b") as handle:  # a few flipped bytes in the middle
        handle.seek(1_000_000)
        handle.write(b"damage")
    dry = snakemake(workdir, "--dry-run")
    hint = dry.stdout + dry.stderr
    assert "data/mnist.npz is damaged" in hint and expected in hint
    assert "Delete it and rerun to fetch it again" in hint
    assert "Nothing to be done" in hint  # and no training planned
    mnist.unlink()
    assert planned_jobs(workdir) == ["all[]", "fetch_mnist[]"]
    snakemake(workdir)
    assert planned_jobs(workdir) == []
