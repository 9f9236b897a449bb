"""Stage: every sample's summary.json and history.npz to the results table and figures."""

import json
import logging

from dynsparse.stage import stage_log
from dynsparse.summary import SummaryOutputs, summarize

with stage_log(snakemake.log[0]):
    output = snakemake.output
    rows = summarize(
        list(snakemake.input.summaries),
        list(snakemake.input.histories),
        SummaryOutputs(
            table_csv=output.table_csv,
            table_md=output.table_md,
            accuracy_png=output.accuracy_png,
            accuracy_svg=output.accuracy_svg,
            curves_png=output.curves_png,
            curves_svg=output.curves_svg,
            table_html=output.get("table_html"),
        ),
        bench_paths=list(snakemake.input.get("bench", [])),
        baselines=json.loads(snakemake.params.baselines),
    )
    logging.info("summarised %d samples", len(rows))
