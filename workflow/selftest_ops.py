"""Stage: run the op self-test on every kernel variant (ISA) the CPU supports, write
results/selftest/ops.json, then fail if any case failed on any variant."""

import logging

from dynsparse.tfsetup import configure_tensorflow

# Before anything imports TensorFlow: thread pools and log level are fixed at its start.
configure_tensorflow(snakemake.threads)

from dynsparse.atomic import write_json  # noqa: E402
from dynsparse.ops import kernel_isa, load_ops, on_each_isa  # noqa: E402
from dynsparse.selftest import run_selftest  # noqa: E402
from dynsparse.stage import stage_log  # noqa: E402

with stage_log(snakemake.log[0]):
    load_ops(snakemake.input.lib)
    default_isa = kernel_isa()

    def run_variant() -> dict:
        logging.info(f"kernels: {kernel_isa()}")
        return run_selftest(quick=bool(snakemake.params.quick), log=logging.info)

    by_isa = on_each_isa(run_variant)
    # The variant chosen at load time gives the top-level fields; every variant is listed.
    summary = {
        **by_isa[default_isa],
        "isa": default_isa,
        "passed": all(result["passed"] for result in by_isa.values()),
        "failed": [f"{isa}: {name}" for isa, r in by_isa.items() for name in r["failed"]],
        "isa_variants": {
            isa: {key: r[key] for key in ("passed", "n_cases", "n_passed", "failed", "seconds")}
            for isa, r in by_isa.items()
        },
    }
    write_json(snakemake.output[0], summary)
    for isa, r in by_isa.items():
        logging.info(f"{isa}: {r['n_passed']}/{r['n_cases']} cases passed in {r['seconds']} s")
    if not summary["passed"]:
        raise RuntimeError(
            f"op self-test failed: {', '.join(summary['failed'])} "
            f"(details in {snakemake.output[0]})"
        )
