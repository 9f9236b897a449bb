rule bench_ops:
    input:
        lib=OPS_LIBRARY,
        selftest="results/selftest/ops.json",
        code=library("bench_ops"),
    output:
        csv=report(
            "results/bench/ops.csv", caption="../report/bench_ops.rst", category="4. Benchmarks"
        ),
        plot=report(
            "results/bench/ops.png", caption="../report/bench_ops.rst", category="4. Benchmarks"
        ),
    log:
        "logs/bench_ops.log",
    benchmark:
        "benchmarks/bench_ops.tsv"
    priority: -10
    conda:
        "../envs/environment.yaml"
    # The whole machine, and after the training jobs, so that timings are not disturbed. The
    # stage caps this at the cores the machine has (dynsparse.bench.bench_threads): `--cores 4`
    # on 2 cores runs dense and sparse on 2 threads, not 4.
    threads: workflow.cores
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        sweep=config["bench"]["ops"],
    script:
        "../workflow/bench_ops.py"


rule bench_training:
    input:
        lib=OPS_LIBRARY,
        selftest="results/selftest/ops.json",
        code=library("bench_training"),
    output:
        csv=report(
            "results/bench/training.csv",
            caption="../report/bench_training.rst",
            category="4. Benchmarks",
        ),
    log:
        "logs/bench_training.log",
    benchmark:
        "benchmarks/bench_training.tsv"
    priority: -10
    conda:
        "../envs/environment.yaml"
    # Measured at 1 thread (as training jobs run) and at the machine's cores (capped by the
    # stage, as for bench_ops), each in its own process.
    threads: workflow.cores
    resources:
        mem_mb=6000,
        runtime=30,
    params:
        defaults=model_defaults_json(),
    script:
        "../workflow/bench_training.py"
