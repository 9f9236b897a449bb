"""Compare two results/ trees bitwise: the training outputs of every sample found in both.

    python tests/tools/compare_results.py DIR_A DIR_B

DIR may be a results/ folder (holding {model}/{sample}/) or one sample's folder. Compared: every
array of records.npz and history.npz (shape, dtype and bytes), except the timing arrays named in
TIMING_ARRAYS, and the accuracies and losses in summary.json. Exit status 1 on any difference or
when a sample or array is missing on one side.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

TIMING_ARRAYS = {"history.npz": {"step_time", "train_seconds"}}
SUMMARY_KEYS = ("final_test_accuracy", "final_test_loss", "best_test_accuracy", "best_epoch")
NPZ_FILES = ("records.npz", "history.npz")


def sample_dirs(root: Path) -> dict[str, Path]:
    if (root / "summary.json").exists():
        return {".": root}
    return {
        str(path.parent.relative_to(root)): path.parent
        # results/<model>/<sample>/seed<N>/summary.json: one folder per training job
        for path in sorted(root.glob("*/*/seed*/summary.json"))
    }


def compare_npz(a: Path, b: Path, skip: set[str]) -> list[str]:
    problems = []
    with np.load(a, allow_pickle=False) as left, np.load(b, allow_pickle=False) as right:
        if set(left.files) != set(right.files):
            problems.append(
                f"{a.name}: arrays differ: {sorted(set(left.files) ^ set(right.files))}"
            )
        for key in sorted(set(left.files) & set(right.files) - skip):
            x, y = left[key], right[key]
            if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                problems.append(
                    f"{a.name}[{key}]: {x.dtype}{x.shape} vs {y.dtype}{y.shape}, values differ"
                )
    return problems


def compare_sample(a: Path, b: Path) -> tuple[list[str], int]:
    problems, arrays = [], 0
    for name in NPZ_FILES:
        skip = TIMING_ARRAYS.get(name, set())
        problems += compare_npz(a / name, b / name, skip)
        with np.load(a / name) as npz:
            arrays += len(set(npz.files) - skip)
    summary_a = json.loads((a / "summary.json").read_text())
    summary_b = json.loads((b / "summary.json").read_text())
    for key in SUMMARY_KEYS:
        if summary_a.get(key) != summary_b.get(key):
            problems.append(
                f"summary.json[{key}]: {summary_a.get(key)!r} vs {summary_b.get(key)!r}"
            )
    return problems, arrays


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    roots = [Path(arg) for arg in argv]
    samples = [sample_dirs(root) for root in roots]
    failed = False
    for only, side in (
        (set(samples[0]) - set(samples[1]), roots[1]),
        (set(samples[1]) - set(samples[0]), roots[0]),
    ):
        for name in sorted(only):
            print(f"MISSING {name}: not in {side}")
            failed = True
    for name in sorted(set(samples[0]) & set(samples[1])):
        problems, arrays = compare_sample(samples[0][name], samples[1][name])
        summary = json.loads((samples[0][name] / "summary.json").read_text())
        if problems:
            failed = True
            print(f"DIFFERENT {name}:")
            for problem in problems:
                print(f"  {problem}")
        else:
            print(
                f"IDENTICAL {name}: {arrays} arrays bitwise, final test accuracy "
                f"{summary['final_test_accuracy']}"
            )
    skipped = ", ".join(f"{f}: {sorted(k)}" for f, k in TIMING_ARRAYS.items())
    print(f"timing arrays not compared: {skipped}")
    return 1 if failed or not samples[0] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
