"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
OPS_SOURCES = sorted((REPO_ROOT / "ops").glob("*.cc"))


@pytest.fixture(scope="session")
def ops_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The custom ops, compiled once per test session (-O3 -mavx2 -mfma) and loaded.

    Returns the absolute path of the loaded .so; `dynsparse.ops.load_ops(ops_library)` returns
    the same module again, and `dynsparse.ops.bsmm` etc. work directly.
    """
    from dynsparse.build import DEFAULT_CXXFLAGS, build_ops
    from dynsparse.ops import load_ops

    output = tmp_path_factory.mktemp("ops") / "libdynsparse_ops.so"
    build_log: list[str] = []
    build_ops(OPS_SOURCES, output, DEFAULT_CXXFLAGS, log=build_log.append)
    load_ops(output)
    return output
