"""Stage: training speed of the default models, sparse beside dense (results/bench/training.csv)."""

from dynsparse.bench_training import bench_training, write_csv

with open(snakemake.log[0], "w") as log:

    def write(message: str) -> None:
        log.write(message + "\n")
        log.flush()

    defaults = {model: dict(snakemake.config[model]["defaults"]) for model in ("fc", "transformer")}
    rows = bench_training(snakemake.input.lib, snakemake.threads, defaults, write)
    write_csv(snakemake.output.csv, rows)
