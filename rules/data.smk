from snakemake.logging import logger

from dynsparse.integrity import RECORD_SUFFIX, mnist_problem, record_path

MNIST = "data/mnist.npz"
MNIST_RECORD = str(record_path(MNIST))
# A dry run already says when the data was damaged since it was fetched (~30 ms to check).
if Path(MNIST).is_file() and Path(MNIST_RECORD).is_file():
    _problem = mnist_problem(MNIST)
    if _problem:
        logger.warning(f"WARNING: {_problem}")


rule fetch_mnist:
    input:
        code=library("fetch_mnist"),
    output:
        mnist=MNIST,
        # update(): kept through the job (restored if the fetch fails), so trainings, which take
        # it as ancient(), never see it missing; a deleted data/mnist.npz reruns this job only.
        sha256=update(MNIST_RECORD),
    log:
        "logs/fetch_mnist.log",
    localrule: True
    conda:
        "../envs/environment.yaml"
    # No core of its own: it mostly waits on the network or pip (~5 s), so it runs beside the
    # ops build, which takes both cores of a 2-core machine.
    threads: 0
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        data=config["data"],
    script:
        "../workflow/fetch_mnist.py"
