# Config validation, sample helpers and wildcard constraints. Parse-time code stays cheap:
# no TensorFlow import here (Snakemake re-parses this file in every cluster job).
import importlib.metadata
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from dynsparse.config import ConfigError, check_config_files, validate_config

try:
    check_config_files(workflow.configfiles)
    SAMPLES = {(s.model, s.name): s for s in validate_config(config)}
except ConfigError as error:
    raise WorkflowError(str(error)) from None

# The library modules each stage imports. They are inputs of the stage's rule, because
# Snakemake tracks only a rule's own script: editing a module reruns the stages that use it.
LIBRARY = {
    "build": ["atomic", "build"],
    "selftest": ["atomic", "ops", "selftest", "tfsetup"],
    "data": ["atomic", "data"],
    "train": ["atomic", "ops", "tfsetup", "rigl", "layers", "models", "records", "train"],
    "extract": ["atomic", "records", "extract"],
    "render": ["atomic", "records", "render"],
    "gif": ["atomic", "gif"],
    "summary": ["atomic", "records", "summary"],
    "bench_ops": ["atomic", "ops", "tfsetup", "bench"],
    "bench_training": ["atomic", "ops", "tfsetup", "rigl", "layers", "models", "bench_training"],
}


def library(stage):
    return [f"workflow/dynsparse/{module}.py" for module in LIBRARY[stage]]


def op_sources(pattern):
    return sorted(str(path) for path in Path("ops").glob(pattern))


def tensorflow_version():
    """The installed TensorFlow's version, read from package metadata (no import)."""
    for dist in ("tensorflow-cpu", "tensorflow"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


def sample_settings(wildcards):
    return SAMPLES[(wildcards.model, wildcards.sample)].settings_json


def samples_of(model=None):
    return [s for s in SAMPLES.values() if model is None or s.model == model]


def per_sample(pattern):
    return [pattern.format(model=s.model, sample=s.name) for s in samples_of()]


def training_mem_mb(wildcards):
    return 6000 if wildcards.model == "transformer" else 3000


def training_runtime_min(wildcards):
    settings = SAMPLES[(wildcards.model, wildcards.sample)].settings
    per_epoch = 6 if wildcards.model == "transformer" else 2
    return 10 + per_epoch * settings["epochs"]


def bench_outputs():
    outputs = []
    if config["bench"]["ops"] != "off":
        outputs += ["results/bench/ops.csv", "results/bench/ops.png"]
    if config["bench"]["training"]:
        outputs += ["results/bench/training.csv"]
    return outputs


def all_targets():
    return [
        "results/selftest/ops.json",
        *per_sample("results/{model}/{sample}/connectivity.gif"),
        *per_sample("results/{model}/{sample}/connectivity.html"),
        *per_sample("results/{model}/{sample}/initial_vs_final.png"),
        "results/summary/table.csv",
        "results/summary/table.md",
        *bench_outputs(),
    ]


wildcard_constraints:
    model="fc|transformer",
    sample="|".join(sorted({re.escape(s.name) for s in samples_of()})) or "(?!)",
