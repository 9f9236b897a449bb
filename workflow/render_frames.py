"""Stage: one connectivity PNG per recorded step (frames/) and initial_vs_final.png, one job."""

import logging

from dynsparse.render import render_frames

logging.basicConfig(
    filename=snakemake.log[0],
    filemode="w",
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)
frames = render_frames(
    snakemake.input.connectivity,
    snakemake.output.frames,
    snakemake.output.comparison,
    sample=snakemake.params.sample,
    cmap=snakemake.params.cmap,
    method=snakemake.params.get("method", "rigl"),
)
logging.info("wrote %d frames to %s", len(frames), snakemake.output.frames)
