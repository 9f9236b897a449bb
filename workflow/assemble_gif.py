"""Stage: frames/ to connectivity.gif (ImageMagick, else imageio) and the report's page."""

import logging

from dynsparse.gif import assemble_gif, write_connectivity_page
from dynsparse.stage import stage_log

with stage_log(snakemake.log[0]):
    tool = assemble_gif(
        snakemake.input.frames,
        snakemake.output.gif,
        delay=int(snakemake.params.delay),
        loop=int(snakemake.params.loop),
    )
    logging.info("GIF written by %s", tool)
    title = (
        f"{snakemake.wildcards.model} / {snakemake.wildcards.sample}: connectivity over training"
    )
    page = write_connectivity_page(
        frames_dir=snakemake.input.frames,
        comparison=snakemake.input.comparison,
        gif=snakemake.output.gif,
        page=snakemake.output.html,
        title=title,
        delay=int(snakemake.params.delay),
        loop=int(snakemake.params.loop),
    )
    logging.info("report page: %s", page)
