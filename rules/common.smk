# Config validation, sample helpers and wildcard constraints. Parse-time code stays cheap:
# no TensorFlow import here (Snakemake re-parses this file in every cluster job).
import importlib.metadata
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from dynsparse.codedeps import library_modules
from dynsparse.config import (
    ConfigError,
    canonical_json,
    check_config_files,
    experiment_name,
    experiment_pictures,
    model_defaults,
    validate_config,
)
from dynsparse.registry import MODELS

try:
    # Snakemake's order: config.yaml, then each --configfile (whose values win).
    _overrides = [Path(f).resolve() for f in workflow.overwrite_configfiles]
    _config_files = [f for f in workflow.configfiles if Path(f).resolve() not in _overrides]
    _config_files += _overrides
    check_config_files(_config_files)
    # Each problem names the file that set the key: config.yaml or a --configfile.
    _origin = ConfigFiles(_config_files).origin
    SAMPLES = {(s.model, s.name): s for s in validate_config(config, origin=_origin)}
except (ConfigError, ConfigSyntaxError) as error:
    raise WorkflowError(str(error)) from None

# An example config (`experiment:` set) keeps its results apart: results/<experiment>/...
EXPERIMENT = experiment_name(config)
RESULTS = "results" if EXPERIMENT is None else f"results/{EXPERIMENT}"
LOGS = "logs" if EXPERIMENT is None else f"logs/{EXPERIMENT}"
BENCHMARKS = "benchmarks" if EXPERIMENT is None else f"benchmarks/{EXPERIMENT}"
# One training job per (sample, seed): RESULTS/<model>/<sample>/seed<N>/.
SEED_DIR = f"{RESULTS}/{{model}}/{{sample}}/seed{{seed}}"
# A sample's pictures come from its first seed and keep the sample's own folder.
SAMPLE_DIR = f"{RESULTS}/{{model}}/{{sample}}"


def library(script):
    """The library modules a stage script imports, found by scanning its imports. They are the
    rule's inputs because Snakemake tracks only the rule's own script: editing a module then
    reruns exactly the stages that use it."""
    return library_modules(f"workflow/{script}.py", "workflow/dynsparse")


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
    """The settings of one (sample, seed) training job; an unlisted seed is no job."""
    sample = SAMPLES[(wildcards.model, wildcards.sample)]
    seed = int(wildcards.seed)
    if seed not in sample.seeds:
        raise WorkflowError(
            f"{wildcards.model} sample {wildcards.sample!r} has no seed {seed}; its seeds are "
            f"{list(sample.seeds)} (set `seeds:` in the sample or the model defaults)"
        )
    return sample.settings_json_for(seed)


def first_seed(wildcards):
    """The seed whose run the pictures show."""
    return SAMPLES[(wildcards.model, wildcards.sample)].seeds[0]


def first_seed_file(name):
    """Input function: `name` in the first seed's folder of the wildcards' sample."""

    def path(wildcards):
        folder = SEED_DIR.format(
            model=wildcards.model, sample=wildcards.sample, seed=first_seed(wildcards)
        )
        return str(Path(folder, name))

    return path


def model_defaults_json():
    """Every model's default settings: what the training benchmark measures."""
    defaults = model_defaults(config)
    return canonical_json({model: settings.to_dict() for model, settings in defaults.items()})


def sample_method(wildcards):
    return SAMPLES[(wildcards.model, wildcards.sample)].settings.rigl.method


def samples_of(model=None):
    return [s for s in SAMPLES.values() if model is None or s.model == model]


def per_sample(pattern):
    return [pattern.format(model=s.model, sample=s.name) for s in samples_of()]


def per_seed(pattern):
    """`pattern` for every (sample, seed) job, in sample then seed order."""
    return [
        pattern.format(model=s.model, sample=s.name, seed=seed)
        for s in samples_of()
        for seed in s.seeds
    ]


def sample_baselines_json():
    """Each sample's named baseline (model/sample → model/sample): the summary pairs them."""
    return canonical_json(
        {f"{s.model}/{s.name}": f"{s.model}/{s.baseline}" for s in samples_of() if s.baseline}
    )


def training_mem_mb(wildcards):
    return MODELS[wildcards.model].mem_mb


def training_runtime_min(wildcards):
    settings = SAMPLES[(wildcards.model, wildcards.sample)].settings
    return MODELS[wildcards.model].runtime_min(settings)


def training_priority(wildcards):
    """Longest training first: twice the job's rough one-core seconds (at least 1), plus one for
    the seed the pictures show. A long transformer run started last would hold one core for
    minutes while the other idles; this way the short FC runs fill the end, each sample's first
    seed before its others, so that its pictures (PICTURE_PRIORITY, as soon as that seed is done)
    are made while the other seeds train instead of after the last training, on a core or two
    (the benchmarks, -10, need both and wait for them)."""
    sample = SAMPLES[(wildcards.model, wildcards.sample)]
    seconds = max(1, round(MODELS[wildcards.model].estimated_seconds(sample.settings)))
    return 2 * seconds + (int(wildcards.seed) == sample.seeds[0])


# Above every training (training_priority): a picture job only becomes ready when its seed's
# training is done, and takes seconds.
PICTURE_PRIORITY = 1_000_000_000


def bench_outputs():
    outputs = []
    if config["bench"]["ops"] != "off":
        outputs += ["results/bench/ops.csv", "results/bench/ops.png"]
    if config["bench"]["training"]:
        outputs += ["results/bench/training.csv"]
    return outputs


def picture_targets():
    """Pictures of the first seed of every sample; an example config's experiment has them
    only with `pictures: true`."""
    if not experiment_pictures(config):
        return []
    return [
        *per_sample(f"{SAMPLE_DIR}/connectivity.gif"),
        *per_sample(f"{SAMPLE_DIR}/connectivity.html"),
        *per_sample(f"{SAMPLE_DIR}/initial_vs_final.png"),
    ]


def all_targets():
    return [
        # Asked for itself: a deleted data/mnist.npz is fetched again without retraining
        # (training depends on its recorded sha256, see rules/data.smk).
        "data/mnist.npz",
        "results/selftest/ops.json",
        *picture_targets(),
        f"{RESULTS}/summary/table.csv",
        f"{RESULTS}/summary/table.md",
        f"{RESULTS}/summary/accuracy_vs_density.png",
        *(bench_outputs() if EXPERIMENT is None else []),
    ]


wildcard_constraints:
    model="|".join(MODELS),
    sample="|".join(sorted({re.escape(s.name) for s in samples_of()})) or "(?!)",
    # Seed numbers as `seeds:` writes them: no sign, no leading zero.
    seed="[1-9][0-9]*",
