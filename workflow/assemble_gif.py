"""Stage: frames/ to connectivity.gif (ImageMagick, else imageio) and its HTML wrapper."""

import logging

from dynsparse.gif import assemble_gif, write_gif_html

logging.basicConfig(
    filename=snakemake.log[0],
    filemode="w",
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)
tool = assemble_gif(
    snakemake.input.frames,
    snakemake.output.gif,
    delay=int(snakemake.params.delay),
    loop=int(snakemake.params.loop),
)
logging.info("GIF written by %s", tool)
title = f"{snakemake.wildcards.model} / {snakemake.wildcards.sample}: connectivity over training"
write_gif_html(snakemake.output.gif, snakemake.output.html, title)
