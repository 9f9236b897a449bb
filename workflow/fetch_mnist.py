"""Stage: write data/mnist.npz (Keras layout) from the first source that passes its checks, and
record its sha256 beside it (data/mnist.npz.sha256)."""

import logging

from dynsparse.data import MnistUnavailableError, fetch_mnist
from dynsparse.stage import stage_log

with stage_log(snakemake.log[0]):
    try:
        result = fetch_mnist(snakemake.params.data, snakemake.output.mnist)
    except MnistUnavailableError as error:
        logging.error("%s", error)
        raise
    logging.info("served by: %s", result.source)
