rule fetch_mnist:
    input:
        code=library("data"),
    output:
        "data/mnist.npz",
    log:
        "logs/fetch_mnist.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        data=config["data"],
    conda:
        "../envs/environment.yaml"
    script:
        "../workflow/fetch_mnist.py"
