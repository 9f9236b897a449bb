"""Load, validate and resolve config.yaml.

Runs at Snakefile parse time (and inside every cluster job), so it imports nothing heavy: PyYAML
and jsonschema only, never TensorFlow.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from dynsparse.registry import MODELS, model_entry
from dynsparse.settings import DEFAULT_VALIDATION, ModelSettings
from dynsparse.sweeps import SweepError, expand_seeds, expand_sweeps

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
# Settings whose value is a mapping: a sample's override merges into the default key by key.
MERGED_MAPPINGS = ("cosine_schedule", "optimizer_args", "gmp")
# Two ways to give one thing: a sample that uses one drops the defaults' other (a sample giving
# both is an error of the model's checks).
ALTERNATIVES = {
    "density": ("densities",),
    "densities": ("density", "distribution"),
    "hidden_sizes": ("hidden_size",),
    "hidden_size": ("hidden_sizes",),
}

# Keys of a sample (or the model defaults) that describe the experiment, not one training run.
SAMPLE_KEYS = ("seeds", "baseline")
# Folder names under results/ that an experiment name may not take.
RESERVED_RESULT_DIRS = ("summary", "bench", "selftest")
EXPERIMENT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


class ConfigError(ValueError):
    """config.yaml is invalid; the message names each offending place and how to fix it."""


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that rejects a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(
                f"{key_node.start_mark.name}:{line}: key {key!r} appears twice in one mapping "
                f"(first on line {seen[key]}); a sample name or setting may be given only once. "
                "Rename or remove one of them."
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_without_duplicates
)


def load_yaml_strict(path: str | Path) -> Any:
    with open(path) as stream:
        return yaml.load(stream, Loader=_StrictLoader)


def load_schema() -> dict[str, Any]:
    with open(SCHEMA_PATH) as stream:
        return yaml.safe_load(stream)


@dataclass(frozen=True)
class Sample:
    """A sample and its replicate seeds; `settings` carry the first seed (the picture seed)."""

    model: str
    name: str
    settings: ModelSettings
    seeds: tuple[int, ...] = ()
    baseline: str | None = None

    def __post_init__(self) -> None:
        if not self.seeds:
            object.__setattr__(self, "seeds", (self.settings.seed,))

    @property
    def settings_json(self) -> str:
        return self.settings.to_json()

    def settings_for(self, seed: int) -> ModelSettings:
        """The settings of the training job of `seed` (everything random follows it)."""
        return dataclasses.replace(self.settings, seed=seed)

    def settings_json_for(self, seed: int) -> str:
        return self.settings_for(seed).to_json()


def canonical_json(obj: Any) -> str:
    """One string per value, whatever the key order: Snakemake compares params by their text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _where(path: Any) -> str:
    return "/".join(str(part) for part in path) or "(top level)"


# Where a key path was set ("config.yaml", "my.yaml:12"): dynsparse.configload.ConfigFiles.origin.
Origin = Callable[[Sequence[Any]], str]


def _in_config_yaml(path: Sequence[Any]) -> str:
    return "config.yaml"


def _schema_errors(
    instance: Any,
    schema: dict[str, Any],
    prefix: str,
    origin: Origin = _in_config_yaml,
    base: Sequence[Any] = (),
) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    messages = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        where = origin([*base, *error.absolute_path])
        messages.append(f"{where}: {prefix}{_where(error.absolute_path)}: {error.message}")
    return messages


def _subschema(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return {"$defs": schema["$defs"], "$ref": f"#/$defs/{name}"}


def resolve_sample(defaults: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    settings = copy.deepcopy(defaults)
    for key in overrides or {}:
        for alternative in ALTERNATIVES.get(key, ()):
            if alternative not in (overrides or {}):
                settings.pop(alternative, None)
    for key, value in (overrides or {}).items():
        if (
            key in MERGED_MAPPINGS
            and isinstance(value, dict)
            and isinstance(settings.get(key), dict)
        ):
            settings[key] = {**settings[key], **value}
        else:
            settings[key] = copy.deepcopy(value)
    return settings


def _problem_key(sample_path: Sequence[Any], settings: dict[str, Any], problem: str) -> list[Any]:
    """Where a model check's problem points: the key it starts with, else the sample."""
    key = problem.split(":", 1)[0].split(" ", 1)[0]
    return [*sample_path, key] if key in settings else list(sample_path)


def experiment_name(config: Mapping[str, Any]) -> str | None:
    """The example config's experiment name, or None for the default pipeline."""
    experiment = config.get("experiment")
    return None if experiment is None else str(experiment["name"])


def experiment_pictures(config: Mapping[str, Any]) -> bool:
    """Whether the run makes pictures: always for the default pipeline; for an example config
    only with `experiment: {pictures: true}`."""
    experiment = config.get("experiment")
    return experiment is None or bool(experiment.get("pictures", False))


def _sample_sections(config: Mapping[str, Any], model: str) -> tuple[list[Any], dict[str, Any]]:
    """Where a model's samples and sweeps live (key path) and that section: the experiment's when
    an example config sets `experiment`, else the model's own (see docs/architecture.md)."""
    experiment = config.get("experiment")
    if experiment is not None:
        return ["experiment", model], dict(experiment.get(model) or {})
    return [model], dict(config[model])


def _experiment_problems(config: Mapping[str, Any], origin: Origin) -> list[str]:
    experiment = config.get("experiment")
    if experiment is None:
        return []
    name = str(experiment["name"])
    if not EXPERIMENT_NAME.fullmatch(name) or name in (*MODELS, *RESERVED_RESULT_DIRS):
        return [
            f"{origin(['experiment', 'name'])}: experiment name {name!r} must match "
            f"[a-z0-9][a-z0-9_-]* and not be one of {', '.join([*MODELS, *RESERVED_RESULT_DIRS])} "
            "(its results go to results/<name>/); rename it"
        ]
    return []


def _written_and_generated(
    model: str, section: Mapping[str, Any], where: list[Any], origin: Origin
) -> tuple[dict[str, tuple[list[Any], Any]], list[str]]:
    """name → (key path, overrides) of the written samples, then the sweeps' generated ones."""
    written = dict(section.get("samples") or {})
    samples = {name: ([*where, "samples", name], o) for name, o in written.items()}
    try:
        generated = expand_sweeps(model, section.get("sweeps"), written)
    except SweepError as error:
        problems = [
            f"{origin([*where, 'sweeps', *p.key.split('.')[2:3]])}: {p}" for p in error.problems
        ]
        return samples, problems
    for name, overrides in generated.items():
        samples[name] = ([*where, "sweeps"], overrides)
    return samples, []


def _sample_problems_and_keys(
    resolved: dict[str, Any], prefix: str, where: str
) -> tuple[tuple[int, ...], str | None, list[str]]:
    """Pop the sample-level keys (`seeds`, `baseline`) off `resolved`; their problems."""
    problems: list[str] = []
    seeds: tuple[int, ...] = ()
    if "seeds" in resolved:
        try:
            seeds = tuple(expand_seeds(resolved.pop("seeds"), key="seeds"))
        except SweepError as error:
            problems += [f"{where}: {prefix}{p}" for p in error.problems]
    baseline = resolved.pop("baseline", None)
    return seeds, None if baseline is None else str(baseline), problems


def _baseline_problems(samples: list[Sample], origin: Origin) -> list[str]:
    names = {(s.model, s.name) for s in samples}
    return [
        f"{origin([s.model])}: {s.model} sample '{s.name}': baseline: no {s.model} sample named "
        f"{s.baseline!r}; name one of this model's samples, or remove `baseline`"
        for s in samples
        if s.baseline is not None and (s.model, s.baseline) not in names
    ]


def validate_config(config: dict[str, Any], origin: Origin = _in_config_yaml) -> list[Sample]:
    """Check the whole config; return every sample resolved (written ones, then the sweeps'
    generated ones), or raise one ConfigError listing all problems (each naming the file it came
    from, the model, the sample and the key)."""
    schema = load_schema()
    problems = _schema_errors(config, schema, "", origin)
    if problems:
        raise ConfigError(_format(problems))
    problems += _experiment_problems(config, origin)
    validation = int(config.get("validation", DEFAULT_VALIDATION))
    samples: list[Sample] = []
    for model, entry in MODELS.items():
        defaults = {**config[model]["defaults"], "validation": validation}
        settings_schema = _subschema(schema, f"{model}_settings")
        where, section = _sample_sections(config, model)
        candidates, sweep_problems = _written_and_generated(model, section, where, origin)
        problems += sweep_problems
        for name, (sample_path, overrides) in candidates.items():
            resolved = resolve_sample(defaults, overrides)
            prefix = f"{model} sample '{name}': "
            seeds, baseline, sample_problems = _sample_problems_and_keys(
                resolved, prefix, origin([*sample_path, "seeds"])
            )
            sample_problems += _schema_errors(
                resolved, settings_schema, prefix, origin, base=sample_path
            )
            if not sample_problems:
                seeds = seeds or (int(resolved.get("seed", 1)),)
                settings = entry.parse({**resolved, "seed": seeds[0]})
                sample_problems = [
                    f"{origin(_problem_key(sample_path, resolved, p))}: {prefix}{p}"
                    for p in entry.checks(settings)
                ]
                samples.append(Sample(model, name, settings, seeds, baseline))
            problems += sample_problems
    problems += _baseline_problems(samples, origin)
    if not samples and not problems:
        problems.append(
            f"{origin(['fc'])}: no samples: add at least one under fc/samples or "
            "transformer/samples (or, in an example config, under experiment/<model>/samples)"
        )
    if problems:
        raise ConfigError(_format(problems))
    return samples


def model_defaults(config: dict[str, Any]) -> dict[str, ModelSettings]:
    """Every model's default settings with its first seed, typed (what the training benchmark
    measures)."""
    defaults = {}
    for model in MODELS:
        settings = dict(config[model]["defaults"])
        seeds = expand_seeds(settings.pop("seeds", settings.get("seed", 1)), key="seeds")
        settings.pop("baseline", None)
        defaults[model] = model_entry(model).parse({**settings, "seed": seeds[0]})
    return defaults


def _format(problems: list[str]) -> str:
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"Invalid configuration ({len(problems)} problem(s)); no job was started:\n{lines}"


def check_config_files(paths: list[str | Path]) -> None:
    """Re-read the config files with the strict loader: Snakemake's own loader silently keeps the
    last of two equal keys, which would drop a sample given twice."""
    for path in paths:
        load_yaml_strict(path)
