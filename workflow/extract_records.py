"""Stage: a sample's records.npz and history.npz to connectivity.npz, metrics.csv, derived.json."""

import logging

from dynsparse.extract import extract_records
from dynsparse.stage import stage_log

with stage_log(snakemake.log[0]):
    extracted = extract_records(
        snakemake.input.records,
        snakemake.input.history,
        snakemake.output.connectivity,
        snakemake.output.metrics,
        snakemake.output.derived,
    )
    derived = extracted.derived
    logging.info(
        "%s: %d records of layers %s (input layer %s)",
        derived["model"],
        len(derived["records"]),
        derived["layers"],
        derived["input_layer"],
    )
    for record in (derived["records"][0], derived["records"][-1]):
        logging.info(
            "update %d: %s", record["update_index"], record.get("pixels") or record.get("features")
        )
