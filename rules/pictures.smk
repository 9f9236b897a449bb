rule extract_records:
    input:
        records="results/{model}/{sample}/records.npz",
        history="results/{model}/{sample}/history.npz",
        code=library("extract_records"),
    output:
        connectivity="results/{model}/{sample}/extracted/connectivity.npz",
        metrics="results/{model}/{sample}/extracted/metrics.csv",
        derived="results/{model}/{sample}/extracted/derived.json",
    log:
        "logs/extract_records/{model}/{sample}.log",
    conda:
        "../envs/environment.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow/extract_records.py"


rule render_frames:
    input:
        connectivity="results/{model}/{sample}/extracted/connectivity.npz",
        code=library("render_frames"),
    output:
        frames=directory("results/{model}/{sample}/frames"),
        comparison=report(
            "results/{model}/{sample}/initial_vs_final.png",
            caption="../report/initial_vs_final.rst",
            category="3. Connectivity",
            subcategory="{model}",
            labels={"model": "{model}", "sample": "{sample}", "figure": "initial vs final"},
        ),
    log:
        "logs/render_frames/{model}/{sample}.log",
    benchmark:
        "benchmarks/render_frames/{model}/{sample}.tsv"
    conda:
        "../envs/environment.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        sample="{sample}",
        method=sample_method,
        cmap=config["render"]["cmap"],
    script:
        "../workflow/render_frames.py"


rule assemble_gif:
    input:
        frames="results/{model}/{sample}/frames",
        comparison="results/{model}/{sample}/initial_vs_final.png",
        code=library("assemble_gif"),
    output:
        gif="results/{model}/{sample}/connectivity.gif",
        html=report(
            "results/{model}/{sample}/connectivity.html",
            caption="../report/gif.rst",
            category="3. Connectivity",
            subcategory="{model}",
            labels={"model": "{model}", "sample": "{sample}", "figure": "animation"},
        ),
    log:
        "logs/assemble_gif/{model}/{sample}.log",
    localrule: True
    conda:
        "../envs/environment.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        delay=config["render"]["gif_delay"],
        loop=config["render"]["gif_loop"],
    script:
        "../workflow/assemble_gif.py"


rule summarize:
    input:
        summaries=per_sample("results/{model}/{sample}/summary.json"),
        histories=per_sample("results/{model}/{sample}/history.npz"),
        bench=bench_outputs(),
        code=library("summarize"),
    output:
        table_csv="results/summary/table.csv",
        table_md="results/summary/table.md",
        table_html=report(
            "results/summary/table.html",
            caption="../report/table.rst",
            category="2. Results",
        ),
        accuracy_png=report(
            "results/summary/accuracy_vs_density.png",
            caption="../report/accuracy_vs_density.rst",
            category="2. Results",
        ),
        accuracy_svg="results/summary/accuracy_vs_density.svg",
        curves_png=report(
            "results/summary/curves.png",
            caption="../report/curves.rst",
            category="2. Results",
        ),
        curves_svg="results/summary/curves.svg",
    log:
        "logs/summarize.log",
    localrule: True
    conda:
        "../envs/environment.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow/summarize.py"
