"""Stage: run the op self-test, write results/selftest/ops.json, then fail if any case failed."""

import traceback

from dynsparse.tfsetup import configure_tensorflow

# Before anything imports TensorFlow: thread pools and log level are fixed at its start.
configure_tensorflow(snakemake.threads)

from dynsparse.atomic import write_json  # noqa: E402
from dynsparse.ops import load_ops  # noqa: E402
from dynsparse.selftest import run_selftest  # noqa: E402

with open(snakemake.log[0], "w") as log:

    def write(line: str) -> None:
        log.write(line + "\n")
        log.flush()

    try:
        load_ops(snakemake.input.lib)
        summary = run_selftest(quick=bool(snakemake.params.quick), log=write)
        write_json(snakemake.output[0], summary)
        write(f"{summary['n_passed']}/{summary['n_cases']} cases passed in {summary['seconds']} s")
        if not summary["passed"]:
            raise RuntimeError(
                f"op self-test failed: {', '.join(summary['failed'])} "
                f"(details in {snakemake.output[0]})"
            )
    except BaseException:
        log.write(traceback.format_exc())
        raise
