"""Stage: one connectivity PNG per recorded step (frames/) and initial_vs_final.png, one job."""

import logging

from dynsparse.render import render_frames
from dynsparse.stage import stage_log

with stage_log(snakemake.log[0]):
    frames = render_frames(
        snakemake.input.connectivity,
        snakemake.output.frames,
        snakemake.output.comparison,
        sample=snakemake.params.sample,
        cmap=snakemake.params.cmap,
        method=snakemake.params.method,
    )
    logging.info("wrote %d frames to %s", len(frames), snakemake.output.frames)
