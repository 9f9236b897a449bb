"""Load, validate and resolve config.yaml.

Runs at Snakefile parse time (and inside every cluster job), so it imports nothing heavy: PyYAML
and jsonschema only, never TensorFlow.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from dynsparse.registry import MODELS, model_entry
from dynsparse.settings import ModelSettings

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
# Settings whose value is a mapping: a sample's override merges into the default key by key.
MERGED_MAPPINGS = ("cosine_schedule", "optimizer_args")
# Two ways to give one thing: a sample that uses one drops the defaults' other (a sample giving
# both is an error of the model's checks).
ALTERNATIVES = {
    "density": ("densities",),
    "densities": ("density", "distribution"),
    "hidden_sizes": ("hidden_size",),
    "hidden_size": ("hidden_sizes",),
}


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
    model: str
    name: str
    settings: ModelSettings

    @property
    def settings_json(self) -> str:
        return self.settings.to_json()


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


def validate_config(config: dict[str, Any], origin: Origin = _in_config_yaml) -> list[Sample]:
    """Check the whole config; return every sample resolved, or raise one ConfigError listing all
    problems (each naming the file it came from, the model, the sample and the key)."""
    schema = load_schema()
    problems = _schema_errors(config, schema, "", origin)
    if problems:
        raise ConfigError(_format(problems))
    samples: list[Sample] = []
    for model, entry in MODELS.items():
        section = config[model]
        settings_schema = _subschema(schema, f"{model}_settings")
        for name, overrides in section["samples"].items():
            resolved = resolve_sample(section["defaults"], overrides)
            prefix = f"{model} sample '{name}': "
            sample_path = (model, "samples", name)
            sample_problems = _schema_errors(
                resolved, settings_schema, prefix, origin, base=sample_path
            )
            if not sample_problems:
                settings = entry.parse(resolved)
                sample_problems = [
                    f"{origin(_problem_key(sample_path, resolved, p))}: {prefix}{p}"
                    for p in entry.checks(settings)
                ]
                samples.append(Sample(model=model, name=name, settings=settings))
            problems += sample_problems
    if not samples and not problems:
        problems.append(
            f"{origin(['fc'])}: no samples: add at least one under fc/samples or "
            "transformer/samples"
        )
    if problems:
        raise ConfigError(_format(problems))
    return samples


def model_defaults(config: dict[str, Any]) -> dict[str, ModelSettings]:
    """Every model's default settings, typed (what the training benchmark measures)."""
    return {model: model_entry(model).parse(config[model]["defaults"]) for model in MODELS}


def _format(problems: list[str]) -> str:
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"Invalid configuration ({len(problems)} problem(s)); no job was started:\n{lines}"


def check_config_files(paths: list[str | Path]) -> None:
    """Re-read the config files with the strict loader: Snakemake's own loader silently keeps the
    last of two equal keys, which would drop a sample given twice."""
    for path in paths:
        load_yaml_strict(path)
