"""Stage: frames/ to connectivity.gif (ImageMagick, else imageio) and the report's page."""

import logging

from dynsparse.gif import assemble_gif, write_connectivity_page

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
page = write_connectivity_page(
    frames_dir=snakemake.input.frames,
    comparison=snakemake.input.comparison,
    gif=snakemake.output.gif,
    page=snakemake.output.html,
    title=f"{snakemake.wildcards.model} / {snakemake.wildcards.sample}: connectivity over training",
    delay=int(snakemake.params.delay),
    loop=int(snakemake.params.loop),
)
logging.info("report page: %s", page)
