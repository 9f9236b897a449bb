"""Stage: compile ops/*.cc into build/ops/libdynsparse_ops.so (replaced atomically)."""

import traceback
from pathlib import Path

from dynsparse.build import build_ops

with open(snakemake.log[0], "w") as log:

    def write(line: str) -> None:
        log.write(line + "\n")
        log.flush()

    try:
        build_ops(
            [Path(source) for source in snakemake.input.sources],
            Path(snakemake.output.lib),
            snakemake.params.cxxflags,
            log=write,
            jobs=snakemake.threads,
        )
    except BaseException:
        log.write(traceback.format_exc())
        raise
