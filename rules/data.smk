rule fetch_mnist:
    input:
        code=library("fetch_mnist"),
    output:
        "data/mnist.npz",
    log:
        "logs/fetch_mnist.log",
    localrule: True
    conda:
        "../envs/environment.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        data=config["data"],
    script:
        "../workflow/fetch_mnist.py"
