"""Stage: run the op self-test, write results/selftest/ops.json, then fail if any case failed."""

import logging

from dynsparse.tfsetup import configure_tensorflow

# Before anything imports TensorFlow: thread pools and log level are fixed at its start.
configure_tensorflow(snakemake.threads)

from dynsparse.atomic import write_json  # noqa: E402
from dynsparse.ops import load_ops  # noqa: E402
from dynsparse.selftest import run_selftest  # noqa: E402
from dynsparse.stage import stage_log  # noqa: E402

with stage_log(snakemake.log[0]):
    load_ops(snakemake.input.lib)
    summary = run_selftest(quick=bool(snakemake.params.quick), log=logging.info)
    write_json(snakemake.output[0], summary)
    logging.info(
        f"{summary['n_passed']}/{summary['n_cases']} cases passed in {summary['seconds']} s"
    )
    if not summary["passed"]:
        raise RuntimeError(
            f"op self-test failed: {', '.join(summary['failed'])} "
            f"(details in {snakemake.output[0]})"
        )
