"""Stage: frames/ to connectivity.gif (ImageMagick, else imageio) and its HTML wrapper."""

import logging

from dynsparse.gif import assemble_gif, write_gif_html
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
    write_gif_html(snakemake.output.gif, snakemake.output.html, title)
