"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
OPS_SOURCES = sorted((REPO_ROOT / "ops").glob("*.cc"))
TEST_CXXFLAGS = "-O3 -mavx2 -mfma"


@pytest.fixture(scope="session")
def ops_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The custom ops, compiled once per test session and loaded (`dynsparse.ops.load_ops`).

    Returns the absolute path of the loaded .so; call `dynsparse.ops.bsmm` etc. directly.
    """
    from dynsparse.build import build_ops
    from dynsparse.ops import load_ops

    output = tmp_path_factory.mktemp("ops") / "libdynsparse_ops.so"
    build_log: list[str] = []
    build_ops(OPS_SOURCES, output, TEST_CXXFLAGS, log=build_log.append)
    load_ops(output)
    return output
