"""Wall time of a no-op `snakemake --cores 4` on an up-to-date tree (goal: under 5 s).

Run after `make run` has finished: `make noop-benchmark`. Not a test: it prints measurements.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REPEATS = 5


def snakemake(*args: str) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "4", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"snakemake failed:\n{result.stdout}\n{result.stderr}")
    return elapsed, result.stdout + result.stderr


def main() -> None:
    _, output = snakemake("--dry-run")
    if "Nothing to be done" not in output:
        sys.exit("The tree is not up to date: run `make run` first, then this benchmark.")
    times = []
    for _ in range(REPEATS):
        elapsed, output = snakemake()
        if "Nothing to be done" not in output:
            sys.exit(f"A no-op run did some work:\n{output}")
        times.append(elapsed)
    print(
        f"no-op `snakemake --cores 4`, {REPEATS} runs: "
        f"median {statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s "
        f"(goal < 5 s)"
    )


if __name__ == "__main__":
    main()
