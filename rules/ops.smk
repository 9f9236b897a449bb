rule build_ops:
    input:
        sources=op_sources("*.cc"),
        headers=op_sources("*.h"),
        code=library("build_ops"),
    output:
        lib="build/ops/libdynsparse_ops.so",
    log:
        "logs/build_ops.log",
    benchmark:
        "benchmarks/build_ops.tsv"
    conda:
        "../envs/environment.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        cxxflags=config["ops"]["cxxflags"],
        tensorflow=tensorflow_version(),
    script:
        "../workflow/build_ops.py"


rule selftest_ops:
    input:
        lib=rules.build_ops.output.lib,
        code=library("selftest_ops"),
    output:
        report(
            "results/selftest/ops.json",
            caption="../report/selftest.rst",
            category="1. Native ops",
        ),
    log:
        "logs/selftest_ops.log",
    benchmark:
        "benchmarks/selftest_ops.tsv"
    conda:
        "../envs/environment.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        quick=config["selftest"].get("quick", False),
    script:
        "../workflow/selftest_ops.py"
