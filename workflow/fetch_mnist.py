"""Stage: write data/mnist.npz (Keras layout) from the first source that passes its checks."""

import logging

from dynsparse.data import MnistUnavailableError, fetch_mnist
from dynsparse.stage import stage_log

with stage_log(snakemake.log[0]):
    try:
        result = fetch_mnist(snakemake.params.data, snakemake.output[0])
    except MnistUnavailableError as error:
        logging.error("%s", error)
        raise
    logging.info("served by: %s", result.source)
