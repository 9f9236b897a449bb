"""Installing a built op library: one rename of a complete file, or nothing when it is the same."""

from __future__ import annotations

import os
from pathlib import Path

from dynsparse.build import OpsBuildError, failure_message, install_library


def test_a_new_library_replaces_the_old_in_one_rename(tmp_path: Path) -> None:
    output, built = tmp_path / "lib.so", tmp_path / ".lib.so.new"
    output.write_bytes(b"old")
    built.write_bytes(b"new")
    inode = built.stat().st_ino
    assert install_library(built, output) == f"installed {output}"
    assert output.read_bytes() == b"new" and output.stat().st_ino == inode
    assert not built.exists()


def test_a_byte_identical_build_keeps_the_existing_file(tmp_path: Path) -> None:
    output, built = tmp_path / "lib.so", tmp_path / ".lib.so.new"
    output.write_bytes(b"same")
    os.utime(output, ns=(1, 1_000_000_000))
    built.write_bytes(b"same")
    assert "kept the existing file" in install_library(built, output)
    assert output.stat().st_mtime_ns == 1_000_000_000 and not built.exists()


def test_the_failure_message_names_the_config_key_once() -> None:
    error = OpsBuildError("g++ failed with exit status 1; first errors:\nerror: bad flag")
    message = failure_message(error, "-O2 -mbad", "logs/build_ops.log")
    assert message.count("ops.cxxflags") == 1 and "'-O2 -mbad'" in message
    assert "error: bad flag" not in message  # the compiler output is in the log, once


def test_light_sources_compile_as_one_unit_and_the_heavy_ones_alone(tmp_path: Path) -> None:
    """The ISA variants and the sources with their own flags are units of their own; the rest,
    each mostly TensorFlow's headers, one unity file that includes them by absolute path."""
    from dynsparse.build import OWN_UNIT_SOURCES, SOURCE_FLAGS, compile_units

    names = sorted(OWN_UNIT_SOURCES | set(SOURCE_FLAGS) | {"a_ops.cc", "b_kernels.cc"})
    sources = [tmp_path / "ops" / name for name in names]
    units = compile_units(sources, tmp_path)
    by_name = {unit.name: flags for unit, flags in units}
    assert set(by_name) == OWN_UNIT_SOURCES | set(SOURCE_FLAGS) | {"unity.cc"}
    for name, flags in SOURCE_FLAGS.items():
        assert by_name[name] == flags
    assert [unit.name for unit, _ in units[: len(OWN_UNIT_SOURCES)]] == sorted(OWN_UNIT_SOURCES)
    included = (tmp_path / "unity.cc").read_text().splitlines()
    assert included == [f'#include "{(tmp_path / "ops" / n).resolve()}"' for n in names[:2]]
    # One light source compiles as itself, no unity file.
    (tmp_path / "unity.cc").unlink()
    assert compile_units([tmp_path / "only.cc"], tmp_path) == [(tmp_path / "only.cc", [])]
    assert not (tmp_path / "unity.cc").exists()
