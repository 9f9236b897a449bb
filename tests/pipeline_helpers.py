"""Run the real workflow on the tiny config in a scratch copy of the repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from dynsparse.data import fetch_mnist, sha256_of

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "tests" / "configs" / "tiny.yaml"
# What a user's checkout holds that the workflow needs (outputs and the venv stay behind).
WORKFLOW_PARTS = ("Snakefile", "rules", "workflow", "ops", "report", "profiles", "envs")


def cached_mnist() -> Path:
    """Real MNIST, fetched once per machine through the pipeline's own data code."""
    cache = Path(os.environ.get("DYNSPARSE_TEST_CACHE", Path.home() / ".cache" / "dynsparse"))
    path = cache / "mnist.npz"
    if not path.exists():
        data = yaml.safe_load(TINY_CONFIG.read_text())["data"]
        fetch_mnist(data, path, cache_dir=cache)
    return path


def make_workdir(target: Path, mnist: Path) -> Path:
    """A copy of the workflow with the tiny config (pointing at the cached MNIST) as config.yaml."""
    target.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(
                source, target / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        elif source.exists():
            shutil.copy2(source, target / part)
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["data"]["local_path"] = str(mnist)
    config["data"]["local_sha256"] = sha256_of(mnist)
    write_config(target, config)
    return target


def read_config(workdir: Path) -> dict:
    return yaml.safe_load((workdir / "config.yaml").read_text())


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
        )
    return result


_JOB = re.compile(r"^rule (\w+):\n(?:    .*\n)*?(?:    wildcards: (.*)\n)?", re.MULTILINE)


def planned_jobs(workdir: Path, *args: str) -> list[str]:
    """The jobs a dry run would execute, as sorted 'rule[wildcards]' strings."""
    result = snakemake(workdir, "--dry-run", *args)
    output = result.stdout + result.stderr
    if "Nothing to be done" in output:
        return []
    jobs = []
    for block in re.split(r"\n(?=\[[^\n]*\]\n(?:local)?rule )", output):
        match = re.search(r"^(?:local)?rule (\w+):$", block, re.MULTILINE)
        if not match:
            continue
        wildcards = re.search(r"^    wildcards: (.*)$", block, re.MULTILINE)
        jobs.append(f"{match.group(1)}[{wildcards.group(1) if wildcards else ''}]")
    return sorted(jobs)
