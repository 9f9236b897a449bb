"""The tiny end-to-end config on a real single-node SLURM cluster, through the SLURM profile.

`snakemake --workflow-profile profiles/slurm` runs in a scratch copy of the repository against
the cluster of tests/slurm/ (started by `ci/slurm.sh`, or here, and then stopped here by PID).
Every job but the localrules must have gone through `sbatch`, and the outputs must equal a local
run's: the pipeline is deterministic. Skips, saying why, where SLURM cannot be started (not
root, packages missing: `bash ci/slurm.sh` installs them). DYNSPARSE_SLURM_REQUIRED=1 turns
that skip into a failure.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import REPO, cached_mnist, make_workdir, snakemake

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPTS = REPO / "tests" / "slurm"
SLURM_RUN_TIMEOUT_S = 1800
# Only on this test cluster: no accounting (so no account to give, and squeue, not sacct, for
# job status), and quick first status checks. Everything else comes from profiles/slurm.
TEST_CLUSTER_FLAGS = (
    "--slurm-no-account",
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--retries",
    "0",
)
# tests/configs/tiny.yaml's samples and their seeds (the first seed's run gets the pictures).
SAMPLE_SEEDS = {
    ("fc", "tiny_fc"): (3, 4),
    ("fc", "m_static"): (3,),
    ("fc", "m_random"): (3,),
    ("transformer", "tiny_tf"): (5,),
}
# Rules that must run as cluster jobs (the heavy ones); the localrules are whatever the run
# printed as `localrule`.
CLUSTER_RULES = {"build_ops", "selftest_ops", "train", "extract_records", "render_frames"}


def _state() -> dict[str, str]:
    directory = Path(os.environ.get("DYNSPARSE_SLURM_DIR", "/tmp/dynsparse-slurm"))
    lines = (directory / "state.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def _script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPTS / name), *args], capture_output=True, text=True, check=False
    )


def _skip(reason: str) -> None:
    if os.environ.get("DYNSPARSE_SLURM_REQUIRED") == "1":
        pytest.fail(f"SLURM is required (DYNSPARSE_SLURM_REQUIRED=1) but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[dict[str, str]]:
    """The running test cluster's state: reused when healthy, else started and later stopped."""
    if _script("status.sh").returncode == 0:
        yield _state()  # started by ci/slurm.sh (or by hand): not ours to stop
        return
    if not sys.platform.startswith("linux"):
        _skip("SLURM test cluster needs Linux")
    install = ["--install"] if os.environ.get("DYNSPARSE_SLURM_INSTALL") == "1" else []
    started = _script("start.sh", *install)
    try:
        if started.returncode != 0:
            lines = (started.stdout + started.stderr).strip().splitlines()
            why = next((line for line in lines if "cannot start" in line or "FAILED" in line), "")
            _skip(f"SLURM could not be started here: {why or lines[-1:]}")
        yield _state()
    finally:
        stopped = _script("stop.sh")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def _slurm_env(state: dict[str, str]) -> dict[str, str]:
    """This environment without a surrounding job's SLURM settings, pointed at the test cluster."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))
    }
    env["SLURM_CONF"] = state["SLURM_CONF"]
    return env


_JOB_BLOCK = re.compile(r"^(local)?rule (\w+):\n((?:    .*\n)+)", re.MULTILINE)
_SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.")


def _jobs(output: str) -> dict[str, tuple[str, str, bool]]:
    """Snakemake job id -> (rule, wildcards, local) for every job the run started."""
    jobs = {}
    for match in _JOB_BLOCK.finditer(output):
        body = match.group(3)
        jobid = re.search(r"^    jobid: (\d+)$", body, re.MULTILINE)
        wildcards = re.search(r"^    wildcards: (.*)$", body, re.MULTILINE)
        assert jobid, match.group(0)
        jobs[jobid.group(1)] = (
            match.group(2),
            wildcards.group(1) if wildcards else "",
            bool(match.group(1)),
        )
    return jobs


# Names of measurements of the run rather than results (wall clock, memory use): they differ.
_MEASURED = re.compile(r"time|second|duration|elapsed|throughput|memory|date|host", re.IGNORECASE)


def _results(value: object) -> object:
    """A JSON value without its measurements."""
    if isinstance(value, dict):
        return {k: _results(v) for k, v in value.items() if not _MEASURED.search(k)}
    if isinstance(value, list):
        return [_results(item) for item in value]
    return value


def _assert_npz_equal(slurm: Path, local: Path) -> None:
    with np.load(slurm) as a, np.load(local) as b:
        assert sorted(a.files) == sorted(b.files), (slurm, a.files, b.files)
        keys = [key for key in a.files if not _MEASURED.search(key)]
        assert keys, slurm
        for key in keys:
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, (slurm, key)
            assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), (slurm, key)


def _csv_results(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        return [
            {k: v for k, v in row.items() if not _MEASURED.search(k)}
            for row in csv.DictReader(stream)
        ]


def test_tiny_run_on_slurm_matches_local_run(
    slurm_cluster: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    mnist = cached_mnist()
    slurm_dir = make_workdir(tmp_path_factory.mktemp("slurm-run"), mnist)
    local_dir = make_workdir(tmp_path_factory.mktemp("local-run"), mnist)
    ctld_log = Path(slurm_cluster["SLURMCTLD_LOG"])
    log_offset = ctld_log.stat().st_size if ctld_log.exists() else 0

    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--workflow-profile",
        "profiles/slurm",
        *TEST_CLUSTER_FLAGS,
    ]
    start = time.monotonic()
    run = subprocess.run(
        command,
        cwd=slurm_dir,
        env=_slurm_env(slurm_cluster),
        capture_output=True,
        text=True,
        timeout=SLURM_RUN_TIMEOUT_S,
        check=False,
    )
    slurm_seconds = time.monotonic() - start
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"{' '.join(command)} failed:\n{output[-12000:]}"
    assert "Using workflow specific profile profiles/slurm" in output

    # Every job that is not a localrule went through sbatch, exactly once.
    jobs = _jobs(output)
    submitted = {m.group(1): (m.group(2), Path(m.group(3))) for m in _SUBMITTED.finditer(output)}
    cluster_jobs = {jobid for jobid, (_, _, local) in jobs.items() if not local}
    assert set(submitted) == cluster_jobs, (sorted(submitted), sorted(cluster_jobs))
    assert len(_SUBMITTED.findall(output)) == len(cluster_jobs)
    rules_on_cluster = {jobs[jobid][0] for jobid in cluster_jobs}
    assert rules_on_cluster >= CLUSTER_RULES, rules_on_cluster
    trained = sorted(jobs[j][1] for j in cluster_jobs if jobs[j][0] == "train")
    assert trained == sorted(
        f"model={m}, sample={s}, seed={seed}"
        for (m, s), seeds in SAMPLE_SEEDS.items()
        for seed in seeds
    )

    # ... and SLURM knows each of them: its log, the controller's log, squeue's history.
    slurm_ids = sorted({slurm_id for slurm_id, _ in submitted.values()}, key=int)
    ctld = ctld_log.read_text(errors="replace")[log_offset:]
    for jobid, (slurm_id, log) in submitted.items():
        rule = jobs[jobid][0]
        assert log.is_file() and log.is_relative_to(slurm_dir / "logs" / "slurm"), log
        assert f"rule {rule}:" in log.read_text(errors="replace"), log
        assert f"_slurm_rpc_submit_batch_job: JobId={slurm_id} " in ctld, slurm_id
        assert f"_job_complete: JobId={slurm_id} WEXITSTATUS 0" in ctld, slurm_id
    squeue = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%T", "--jobs", ",".join(slurm_ids)],
        env=_slurm_env(slurm_cluster),
        capture_output=True,
        text=True,
        check=True,
    )
    states = dict(line.split("|") for line in squeue.stdout.split())
    assert states == dict.fromkeys(slurm_ids, "COMPLETED"), states

    # The same workflow run locally gives the same results.
    start = time.monotonic()
    snakemake(local_dir)
    local_seconds = time.monotonic() - start
    for (model, sample), seeds in SAMPLE_SEEDS.items():
        a = slurm_dir / "results" / model / sample
        b = local_dir / "results" / model / sample
        for seed in seeds:
            run_a, run_b = a / f"seed{seed}", b / f"seed{seed}"
            summary_a = json.loads((run_a / "summary.json").read_text())
            summary_b = json.loads((run_b / "summary.json").read_text())
            assert summary_a["final_test_accuracy"] == summary_b["final_test_accuracy"]
            assert _results(summary_a) == _results(summary_b)
            _assert_npz_equal(run_a / "records.npz", run_b / "records.npz")
            _assert_npz_equal(run_a / "history.npz", run_b / "history.npz")
        _assert_npz_equal(
            a / "extracted" / "connectivity.npz", b / "extracted" / "connectivity.npz"
        )
        metrics = a / "extracted" / "metrics.csv"
        assert _csv_results(metrics) == _csv_results(b / "extracted" / "metrics.csv")
        derived = json.loads((a / "extracted" / "derived.json").read_text())
        assert _results(derived) == _results(
            json.loads((b / "extracted" / "derived.json").read_text())
        )
    print(
        f"SLURM run: {slurm_seconds:.0f}s for {len(cluster_jobs)} sbatch jobs "
        f"({len(jobs) - len(cluster_jobs)} local); local run: {local_seconds:.0f}s"
    )
