"""Stage: compile ops/*.cc into build/ops/<build id>/libdynsparse_ops.so (replaced only by a
good build)."""

import sys
from pathlib import Path

from dynsparse.build import CompilerNotFoundError, OpsBuildError, build_ops, failure_message
from dynsparse.stage import stage_log

failed = False
with stage_log(snakemake.log[0]) as log:

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
    except (OpsBuildError, CompilerNotFoundError) as error:
        # Said once, at the end of the log under the compiler output (the default profile prints
        # a failed job's log); no traceback: it would only repeat it from inside the thread pool.
        write(failure_message(error, snakemake.params.cxxflags, snakemake.log[0]))
        failed = True
if failed:
    sys.exit(1)
