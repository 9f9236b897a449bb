rule train:
    input:
        mnist="data/mnist.npz",
        ops=rules.build_ops.output.lib,
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
    script:
        "../workflow/train.py"
