from dynsparse.build import build_id

# Content, not clocks: a touched source with unchanged bytes does not rebuild (checksums, see
# profiles/default). The library's folder names its flags and TensorFlow release, so a build
# with a wrong ops.cxxflags fails beside the good library, and reverting the flag plans nothing.
OPS_LIBRARY = (
    f"build/ops/{build_id(config['ops']['cxxflags'], tensorflow_version())}/libdynsparse_ops.so"
)


rule build_ops:
    input:
        sources=op_sources("*.cc"),
        headers=op_sources("*.h"),
        code=library("build_ops"),
    output:
        # update(): Snakemake keeps the last good library while building and restores it when
        # the build fails; the build itself only renames a complete new one over it.
        lib=update(OPS_LIBRARY),
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
        lib=OPS_LIBRARY,
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
