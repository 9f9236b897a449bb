"""Compile the C++ TensorFlow custom ops (`ops/*.cc`) into one shared library."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dynsparse.atomic import atomic_path

DEFAULT_CXXFLAGS = "-O3 -mavx2 -mfma"

Log = Callable[[str], None]


class CompilerNotFoundError(RuntimeError):
    """g++ is not installed or not on PATH."""


class OpsBuildError(RuntimeError):
    """g++ failed; the full compiler output is in the log."""


def tensorflow_flags() -> tuple[list[str], list[str]]:
    """Compile and link flags of the installed TensorFlow wheel (ABI, C++ standard, includes)."""
    import tensorflow as tf

    return list(tf.sysconfig.get_compile_flags()), list(tf.sysconfig.get_link_flags())


def compile_command(
    sources: Sequence[Path], output: Path, extra_flags: str, compiler: str = "g++"
) -> list[str]:
    compile_flags, link_flags = tensorflow_flags()
    return [
        compiler,
        "-shared",
        "-fPIC",
        *shlex.split(extra_flags),
        *[str(source) for source in sources],
        "-o",
        str(output),
        *compile_flags,
        *link_flags,
        # Unresolved symbols fail here rather than when TensorFlow loads the library.
        "-Wl,-z,defs",
        # TensorFlow's own headers emit ~100 of these; ours would still show as errors or others.
        "-Wno-deprecated-declarations",
        "-Wno-interference-size",
        "-Wno-psabi",
    ]


def build_ops(sources: list[Path], output: Path, extra_flags: str, log: Log = print) -> None:
    """Compile `sources` into the shared library `output`, replacing it atomically.

    `extra_flags` are the configured g++ flags (optimisation, instruction set). Raises
    CompilerNotFoundError when g++ is missing and CalledProcessError when compilation fails
    (the compiler output is logged first).
    """
    compiler = shutil.which("g++")
    if compiler is None:
        raise CompilerNotFoundError(
            "g++ was not found on PATH; it is needed to build the TensorFlow custom ops. Install "
            "it with `apt-get install g++` (or `build-essential`), or `conda install gxx_linux-64` "
            "in a conda environment."
        )
    if not sources:
        raise ValueError("build_ops: no C++ sources given")
    missing = [str(source) for source in sources if not Path(source).is_file()]
    if missing:
        raise FileNotFoundError(f"build_ops: missing C++ sources: {', '.join(missing)}")
    output = Path(output)
    with atomic_path(output, suffix=".so") as tmp:
        command = compile_command([Path(s) for s in sources], tmp, extra_flags, compiler)
        log(f"$ {shlex.join(command)}")
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        output_text = (result.stdout + result.stderr).strip()
        if output_text:
            log(output_text)
        if result.returncode != 0:
            errors = [line for line in output_text.splitlines() if "error" in line]
            raise OpsBuildError(
                f"g++ failed with exit status {result.returncode} building {output}; "
                f"first errors:\n" + "\n".join(errors[:10] or output_text.splitlines()[-10:])
            )
        log(f"built {output} in {time.perf_counter() - start:.1f} s")
