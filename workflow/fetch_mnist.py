"""Stage: write data/mnist.npz (Keras layout) from the first source that passes its checks, and
record its sha256 beside it (data/mnist.npz.sha256)."""

import logging

from dynsparse.data import MnistUnavailableError, fetch_mnist

logging.basicConfig(
    filename=snakemake.log[0],
    filemode="w",
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)
try:
    result = fetch_mnist(snakemake.params.data, snakemake.output.mnist)
except MnistUnavailableError as error:
    logging.error("%s", error)
    raise
logging.info("served by: %s", result.source)
