"""Compile the C++ TensorFlow custom ops (`ops/*.cc`) into one shared library."""

from __future__ import annotations

import filecmp
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Base flags of every translation unit. The products are compiled for AVX2 and for AVX-512 in any
# case (ops/bsmm_avx2.cc, ops/bsmm_avx512.cc, by `#pragma GCC target`) and chosen at load time.
DEFAULT_CXXFLAGS = "-O3 -mavx2 -mfma"
# TensorFlow's bundled Eigen does not compile with AVX512-FP16 enabled (-march=native or
# -march=sapphirerapids on CPUs that have it); the ops use no FP16, so it is always turned off.
NO_FP16_FLAG = "-mno-avx512fp16"
# Flags of single sources, after the configured ones. gelu_elements.cc computes the fused layer's
# GELU with Eigen's erfc and exp for TensorFlow's bits: without FMA (TensorFlow's wheel uses none,
# and a fused multiply-add rounds once where Eigen's pmadd otherwise rounds twice) and without
# contraction; with AVX2, whose integer vectors Eigen's exp uses natively where AVX alone splits
# them into SSE halves (5x faster in g++'s build: docs/performance.md §000000; the same float
# operations in the same order, checked against TensorFlow's Erfc and Exp for every float32).
SOURCE_FLAGS = {
    "gelu_elements.cc": ["-mno-avx512f", "-mavx2", "-mno-fma", "-ffp-contract=off"],
}
# Sources compiled as translation units of their own: the products for each instruction set,
# 20-30 s each, which the two build jobs compile side by side. Every other source without
# SOURCE_FLAGS joins one "unity" unit (a generated file that #includes them): each spent ~8 s of
# its ~9 s parsing TensorFlow's headers, so five units took ~40 s and one takes ~13 s, and the
# build (2 jobs) ~50 -> ~38 s. They therefore share one namespace: a name at file scope, even in
# an anonymous namespace, must not repeat across them (a repeat is a compile error, never silent).
OWN_UNIT_SOURCES = frozenset({"bsmm_avx2.cc", "bsmm_avx512.cc"})
UNITY_NAME = "unity.cc"
# TensorFlow's own headers emit ~100 of these with g++ 12; our code has none.
QUIET_FLAGS = ["-Wno-deprecated-declarations", "-Wno-interference-size", "-Wno-psabi"]

Log = Callable[[str], None]


class CompilerNotFoundError(RuntimeError):
    """g++ is not installed or not on PATH."""


class OpsBuildError(RuntimeError):
    """g++ failed; the full compiler output is in the log."""


CXXFLAGS_KEY = "ops.cxxflags"


def failure_message(error: Exception, cxxflags: str, log_path: str) -> str:
    """What the user reads when the build fails: the cause, where the flags came from, the fix."""
    if isinstance(error, CompilerNotFoundError):
        return f"build_ops: {error}"
    # The compiler's own output is already in the log just above: name the cause, not repeat it.
    cause = str(error).split(";")[0]
    return (
        f"build_ops: {cause} (its output is above).\n"
        f"The extra g++ flags were {cxxflags!r}, from the config key {CXXFLAGS_KEY} "
        f"(config.yaml or your --configfile): fix or revert them, then rerun. The last good "
        f"library, if any, is kept ({log_path})."
    )


def tensorflow_flags() -> tuple[list[str], list[str]]:
    """Compile and link flags of the installed TensorFlow wheel (ABI, C++ standard, includes)."""
    from dynsparse.tfsetup import import_tensorflow

    tf = import_tensorflow()

    return list(tf.sysconfig.get_compile_flags()), list(tf.sysconfig.get_link_flags())


def find_compiler() -> str:
    compiler = shutil.which("g++")
    if compiler is None:
        raise CompilerNotFoundError(
            "g++ was not found on PATH; it is needed to build the TensorFlow custom ops. Install "
            "it with `apt-get install g++` (or `build-essential`), or `conda install gxx_linux-64` "
            "in a conda environment."
        )
    return compiler


def compiler_accepts(compiler: str, flag: str) -> bool:
    """Whether `compiler` knows `flag` (g++ before 12 does not know -mno-avx512fp16)."""
    probe = [compiler, flag, "-x", "c++", "-fsyntax-only", "-"]
    result = subprocess.run(probe, input="", capture_output=True, text=True, check=False)
    return result.returncode == 0


def compile_units(sources: Sequence[Path], unity_dir: Path) -> list[tuple[Path, list[str]]]:
    """The translation units of `sources`, each with its own extra flags: sources in
    OWN_UNIT_SOURCES, then the rest in one unity file written into `unity_dir` (alone when there
    is only one), then those with SOURCE_FLAGS; roughly longest first, as the jobs take them."""
    own = [source for source in sources if source.name in OWN_UNIT_SOURCES]
    flagged = [source for source in sources if source.name in SOURCE_FLAGS]
    together = [source for source in sources if source not in own and source not in flagged]
    units: list[tuple[Path, list[str]]] = [(source, []) for source in own]
    if len(together) == 1:
        units.append((together[0], []))
    elif together:
        unity = unity_dir / UNITY_NAME
        unity.write_text("".join(f'#include "{source.resolve()}"\n' for source in together))
        units.append((unity, []))
    units += [(source, list(SOURCE_FLAGS[source.name])) for source in flagged]
    return units


def _run(command: list[str], log: Log) -> float:
    log(f"$ {shlex.join(command)}")
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    output_text = (result.stdout + result.stderr).strip()
    if output_text:
        log(output_text)
    if result.returncode != 0:
        errors = [line for line in output_text.splitlines() if "error" in line]
        raise OpsBuildError(
            f"g++ failed with exit status {result.returncode}; first errors:\n"
            + "\n".join(errors[:10] or output_text.splitlines()[-10:])
        )
    return time.perf_counter() - start


def build_ops(
    sources: Sequence[Path],
    output: Path,
    extra_flags: str,
    log: Log = print,
    jobs: int | None = None,
) -> None:
    """Compile `sources` into the shared library `output`, replaced atomically.

    `extra_flags` are the configured g++ flags (optimisation, instruction set). Sources compile
    in parallel (`jobs`, default: the CPU count) and link with `-Wl,-z,defs`, so a missing symbol
    fails here rather than when TensorFlow loads the library. Raises CompilerNotFoundError when
    g++ is missing and OpsBuildError when compilation fails (the compiler output is logged).
    """
    compiler = find_compiler()
    sources = [Path(source) for source in sources]
    if not sources:
        raise ValueError("build_ops: no C++ sources given")
    missing = [str(source) for source in sources if not source.is_file()]
    if missing:
        raise FileNotFoundError(f"build_ops: missing C++ sources: {', '.join(missing)}")
    compile_flags, link_flags = tensorflow_flags()
    user_flags = shlex.split(extra_flags)
    if compiler_accepts(compiler, NO_FP16_FLAG):
        user_flags.append(NO_FP16_FLAG)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".build-", dir=output.parent) as objects_dir:
        units = compile_units(sources, Path(objects_dir))
        objects = [Path(objects_dir) / f"{i}_{unit.stem}.o" for i, (unit, _) in enumerate(units)]
        commands = [
            [compiler, "-c", "-fPIC", *user_flags, *unit_flags]
            + [str(unit), "-o", str(obj)]
            + compile_flags
            + QUIET_FLAGS
            for (unit, unit_flags), obj in zip(units, objects, strict=True)
        ]
        workers = max(1, min(len(commands), jobs or os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda command: _run(command, log), commands))
        with tempfile.NamedTemporaryFile(
            prefix=f".{output.name}.", suffix=".so", dir=output.parent, delete=False
        ) as handle:
            tmp = Path(handle.name)
        try:
            link = [
                compiler,
                "-shared",
                "-fPIC",
                *user_flags,
                *map(str, objects),
                "-o",
                str(tmp),
                *link_flags,
                "-Wl,-z,defs",
            ]
            _run(link, log)
            log(install_library(tmp, output))
        finally:
            tmp.unlink(missing_ok=True)
    log(f"built {output} in {time.perf_counter() - start:.1f} s")


def build_id(cxxflags: str, tensorflow_version: str) -> str:
    """The folder name of a library built with these flags for this TensorFlow: changing a flag
    builds into a new folder, so a failed build with a wrong flag never touches the good library,
    and reverting the flag finds that library (and the jobs that used it) up to date."""
    digest = hashlib.sha256(f"{cxxflags}\0{tensorflow_version}".encode()).hexdigest()
    return f"tf{tensorflow_version}-{digest[:12]}"


def install_library(built: Path, output: Path) -> str:
    """Move the freshly linked `built` onto `output` in one rename, unless `output` already holds
    the same bytes: then the old file stays (a process that has it loaded keeps a valid file).
    Until this point the last good library is untouched, so a failed build never leaves a broken
    or missing one behind."""
    if output.is_file() and filecmp.cmp(built, output, shallow=False):
        built.unlink()
        return f"{output} is byte-identical to the new build; kept the existing file"
    built.chmod(0o755)
    os.replace(built, output)
    return f"installed {output}"
