"""Stage: time the block-sparse ops against dense and tf.sparse; results/bench/ops.{csv,png}."""

from dynsparse.bench import bench_threads
from dynsparse.stage import stage_log
from dynsparse.tfsetup import configure_tensorflow

# Before anything imports TensorFlow: thread pools and log level are fixed at its start.
THREADS = bench_threads(snakemake.threads)
configure_tensorflow(THREADS)

from dynsparse.bench import (  # noqa: E402
    bench_ops,
    bench_ops_table,
    plot_bench_ops,
    write_bench_ops_csv,
)
from dynsparse.ops import load_ops  # noqa: E402

with stage_log(snakemake.log[0]) as log:

    def write(line: str) -> None:
        log.write(line + "\n")
        log.flush()

    load_ops(snakemake.input.lib)
    write(f"sweep {snakemake.params.sweep}, {THREADS} threads")
    rows = bench_ops(snakemake.params.sweep, log=write)
    write_bench_ops_csv(rows, snakemake.output.csv)
    plot_bench_ops(rows, snakemake.output.plot)
    write(bench_ops_table(rows))
