"""Stage: training speed of the default models, sparse beside dense (results/bench/training.csv)."""

import json
import logging

from dynsparse.bench_training import bench_training_per_thread_count, write_csv
from dynsparse.registry import parse_settings
from dynsparse.stage import stage_log

with stage_log(snakemake.log[0]):
    defaults = {
        model: parse_settings(model, settings)
        for model, settings in json.loads(snakemake.params.defaults).items()
    }
    rows = bench_training_per_thread_count(
        snakemake.input.lib, snakemake.threads, defaults, logging.info
    )
    write_csv(snakemake.output.csv, rows)
