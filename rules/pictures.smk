rule extract_records:
    input:
        records=first_seed_file("records.npz"),
        history=first_seed_file("history.npz"),
        code=library("extract_records"),
    output:
        connectivity=f"{SAMPLE_DIR}/extracted/connectivity.npz",
        metrics=f"{SAMPLE_DIR}/extracted/metrics.csv",
        derived=f"{SAMPLE_DIR}/extracted/derived.json",
    log:
        f"{LOGS}/extract_records/{{model}}/{{sample}}.log",
    priority: PICTURE_PRIORITY
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
        connectivity=f"{SAMPLE_DIR}/extracted/connectivity.npz",
        code=library("render_frames"),
    output:
        frames=directory(f"{SAMPLE_DIR}/frames"),
        comparison=report(
            f"{SAMPLE_DIR}/initial_vs_final.png",
            caption="../report/initial_vs_final.rst",
            category="3. Connectivity",
            subcategory="{model}",
            labels={"model": "{model}", "sample": "{sample}", "figure": "initial vs final"},
        ),
    log:
        f"{LOGS}/render_frames/{{model}}/{{sample}}.log",
    benchmark:
        f"{BENCHMARKS}/render_frames/{{model}}/{{sample}}.tsv"
    priority: PICTURE_PRIORITY
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
        frames=f"{SAMPLE_DIR}/frames",
        comparison=f"{SAMPLE_DIR}/initial_vs_final.png",
        code=library("assemble_gif"),
    output:
        gif=f"{SAMPLE_DIR}/connectivity.gif",
        html=report(
            f"{SAMPLE_DIR}/connectivity.html",
            caption="../report/gif.rst",
            category="3. Connectivity",
            subcategory="{model}",
            labels={"model": "{model}", "sample": "{sample}", "figure": "animation"},
        ),
    log:
        f"{LOGS}/assemble_gif/{{model}}/{{sample}}.log",
    priority: PICTURE_PRIORITY
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
        summaries=per_seed(f"{SEED_DIR}/summary.json"),
        histories=per_seed(f"{SEED_DIR}/history.npz"),
        bench=bench_outputs() if EXPERIMENT is None else [],
        code=library("summarize"),
    output:
        table_csv=f"{RESULTS}/summary/table.csv",
        table_md=f"{RESULTS}/summary/table.md",
        table_html=report(
            f"{RESULTS}/summary/table.html",
            caption="../report/table.rst",
            category="2. Results",
        ),
        accuracy_png=report(
            f"{RESULTS}/summary/accuracy_vs_density.png",
            caption="../report/accuracy_vs_density.rst",
            category="2. Results",
        ),
        accuracy_svg=f"{RESULTS}/summary/accuracy_vs_density.svg",
        curves_png=report(
            f"{RESULTS}/summary/curves.png",
            caption="../report/curves.rst",
            category="2. Results",
        ),
        curves_svg=f"{RESULTS}/summary/curves.svg",
    log:
        f"{LOGS}/summarize.log",
    localrule: True
    conda:
        "../envs/environment.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        baselines=sample_baselines_json(),
    script:
        "../workflow/summarize.py"
