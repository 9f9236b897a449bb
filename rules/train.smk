rule train:
    input:
        # The data's recorded sha256, rewritten only when the content changes; ancient(): a
        # re-fetch of the same bytes (the fetch job ran) does not rerun any training.
        mnist_sha256=ancient(MNIST_RECORD),
        ops=OPS_LIBRARY,
        # Training only starts once the ops passed their self-test.
        selftest="results/selftest/ops.json",
        code=library("train"),
    output:
        records="results/{model}/{sample}/records.npz",
        history="results/{model}/{sample}/history.npz",
        summary="results/{model}/{sample}/summary.json",
    log:
        "logs/train/{model}/{sample}.log",
    benchmark:
        "benchmarks/train/{model}/{sample}.tsv"
    conda:
        "../envs/environment.yaml"
    threads: 1
    resources:
        mem_mb=training_mem_mb,
        runtime=training_runtime_min,
    params:
        settings=sample_settings,
        # Read, checked against its recorded sha256 first; not an input, so that deleting a
        # damaged copy reruns the fetch only.
        mnist=lambda wildcards, input: input.mnist_sha256.removesuffix(RECORD_SUFFIX),
    script:
        "../workflow/train.py"
