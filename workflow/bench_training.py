"""Stage: training speed of the default models, sparse beside dense (results/bench/training.csv)."""

import json

from dynsparse.bench_training import bench_training, write_csv

with open(snakemake.log[0], "w") as log:

    def write(message: str) -> None:
        log.write(message + "\n")
        log.flush()

    defaults = json.loads(snakemake.params.defaults)
    rows = bench_training(snakemake.input.lib, snakemake.threads, defaults, write)
    write_csv(snakemake.output.csv, rows)
