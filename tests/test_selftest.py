"""The op self-test (dynsparse.selftest) as pytest cases, one per self-test case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dynsparse import ops, selftest

SLOW_SIZE = 2048  # the 256 x 2048 x 2048 cases take about a second each


def case_marks(case: selftest.Case) -> list[pytest.MarkDecorator]:
    if isinstance(case, selftest.MatmulCase) and max(case.n_in, case.n_out) >= SLOW_SIZE:
        return [pytest.mark.slow]
    return []


CASES = [
    pytest.param(case, id=case.name, marks=case_marks(case))
    for case in selftest.all_cases(quick=False)
]


@pytest.mark.parametrize("case", CASES)
def test_selftest_case(ops_library: Path, case: selftest.Case) -> None:
    result = selftest.run_case(case)
    failed = {name: check for name, check in result["checks"].items() if not check["passed"]}
    assert result["passed"], json.dumps(
        {"exception": result.get("exception"), "failed_checks": failed}, indent=1
    )


def test_case_names_are_unique() -> None:
    for quick in (True, False):
        names = [case.name for case in selftest.all_cases(quick)]
        assert len(names) == len(set(names))


def test_quick_list_covers_every_block_size_and_kind() -> None:
    cases = selftest.all_cases(quick=True)
    matmul = [case for case in cases if isinstance(case, selftest.MatmulCase)]
    assert {case.block_size for case in matmul} == set(ops.BLOCK_SIZES)
    assert {case.pattern for case in matmul} == {"random", "sign_ones", "fixed"}
    assert {selftest.case_kind(case) for case in cases} == {
        "matmul",
        "numeric_gradient",
        "pattern_update",
        "determinism",
        "heads_layout",
        "layer",
        "softmax",
        "group_norm",
        "error",
    }


def test_a_wrong_result_fails_its_case(ops_library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: a small error in one output element is caught by the tolerance."""
    real_bsmm = ops.bsmm

    def slightly_wrong_bsmm(*args: object, **kwargs: object) -> object:
        y = real_bsmm(*args, **kwargs)
        bump = np.zeros(y.shape, np.float32)
        bump.flat[0] = 1e-3 * float(np.abs(y.numpy()).max())
        return y + bump

    monkeypatch.setattr(ops, "bsmm", slightly_wrong_bsmm)
    case = selftest.MatmulCase("wrong", (16,), 784, 320, 1, density=0.1)
    result = selftest.run_case(case)
    assert not result["passed"]
    assert not result["checks"]["y"]["passed"]


def test_run_selftest_summarises_every_case(ops_library: Path) -> None:
    summary = selftest.run_selftest(quick=True)
    assert summary["passed"], summary["failed"]
    assert summary["n_cases"] == len(selftest.all_cases(quick=True)) == len(summary["cases"])
    json.dumps(summary)  # JSON-ready
    for result in summary["cases"]:
        assert {"name", "kind", "checks", "max_abs_error", "passed", "seconds"} <= set(result)
