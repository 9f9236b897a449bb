# A target under results/<model>/ for a sample the config does not have: say which samples
# there are (without this rule Snakemake gives a bare MissingRuleException).
from dynsparse.configload import unknown_sample


rule unknown_sample:
    input:
        lambda w: unknown_sample(w.model, w.name, [s.name for s in samples_of(w.model)]),
    output:
        "results/{model}/{name}/{path}",
    log:
        "logs/unknown_sample/{model}/{name}/{path}.log",
    wildcard_constraints:
        name="(?!(?:{})/)[^/]+".format("|".join(re.escape(s.name) for s in samples_of()) or "(?!)"),
        path=".+",
    localrule: True
    conda:
        "../envs/environment.yaml"
    threads: 1
    resources:
        mem_mb=100,
        runtime=1,
    shell:
        "false"
