# Dynamic sparse training (RigL) on MNIST: native sparse TensorFlow ops, training, pictures.
# Stages live in rules/*.smk; the logic lives in workflow/dynsparse (see docs/architecture.md).
from snakemake.utils import min_version

min_version("9.0")


include: "rules/configload.smk"


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/ops.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/pictures.smk"
include: "rules/bench.smk"
include: "rules/targets.smk"


rule all:
    default_target: True
    input:
        all_targets(),
