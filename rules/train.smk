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
        records=f"{SEED_DIR}/records.npz",
        history=f"{SEED_DIR}/history.npz",
        summary=f"{SEED_DIR}/summary.json",
    log:
        f"{LOGS}/train/{{model}}/{{sample}}/seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/train/{{model}}/{{sample}}/seed{{seed}}.tsv"
    # Longest first (rules/common.smk): no long run starts last.
    priority: training_priority
    conda:
        "../envs/environment.yaml"
    threads: 1
    resources:
        mem_mb=training_mem_mb,
        runtime=training_runtime_min,
    params:
        settings=sample_settings,
        sample="{sample}",
        # Read, checked against its recorded sha256 first; not an input, so that deleting a
        # damaged copy reruns the fetch only.
        mnist=lambda wildcards, input: input.mnist_sha256.removesuffix(RECORD_SUFFIX),
    script:
        "../workflow/train.py"
