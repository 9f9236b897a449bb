"""Load, validate and resolve config.yaml.

Runs at Snakefile parse time (and inside every cluster job), so it imports nothing heavy: PyYAML
and jsonschema only, never TensorFlow.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
MODELS = ("fc", "transformer")
# Settings whose value is a mapping: a sample's override merges into the default key by key.
MERGED_MAPPINGS = ("cosine_schedule", "optimizer_args")
MNIST_PIXELS = 784
TRANSFORMER_CLASSES = 10


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
    settings: dict[str, Any]

    @property
    def settings_json(self) -> str:
        return canonical_json(self.settings)

    @property
    def results_dir(self) -> str:
        return f"results/{self.model}/{self.name}"


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


def _fc_layer_checks(settings: dict[str, Any]) -> list[str]:
    block, hidden = settings["block_size"], settings["hidden_size"]
    problems = []
    if settings["densities"][0] < 1:
        for what, size in (("input size 784", MNIST_PIXELS), ("hidden_size", hidden)):
            if size % block:
                problems.append(
                    f"block_size: {block} does not divide fc1's {what} ({size}); use a block "
                    "size that divides both 784 and hidden_size"
                )
    return problems


def _transformer_layer_checks(settings: dict[str, Any]) -> list[str]:
    block = settings["block_size"]
    if settings["sparsity"] == 0:
        return []
    widths = {
        "hidden_size": settings["hidden_size"],
        "heads*qkv_size": settings["heads"] * settings["qkv_size"],
        "ff_size": settings["ff_size"],
    }
    return [
        f"block_size: {block} does not divide {name} ({width}); every sparse layer's sides must "
        "be multiples of the block size"
        for name, width in widths.items()
        if width % block
    ]


def _min_blocks_check(model: str, settings: dict[str, Any]) -> list[str]:
    """A layer needs at least one non-zero block, and RigL needs room to regrow into."""
    problems = []
    if model == "fc":
        shapes = [(MNIST_PIXELS, settings["hidden_size"], settings["block_size"])]
        shapes.append((settings["hidden_size"], TRANSFORMER_CLASSES, 1))
        densities = settings["densities"]
    else:
        shapes = [(settings["hidden_size"], settings["ff_size"], settings["block_size"])]
        densities = [1 - settings["sparsity"]]
    for (n_in, n_out, block), density in zip(shapes, densities, strict=False):
        if density >= 1 or n_in % block or n_out % block:
            continue
        blocks = (n_in // block) * (n_out // block)
        if math.ceil(density * blocks) < 1:
            problems.append(f"density {density} leaves no block in a {n_in}x{n_out} layer")
    return problems


def validate_config(config: dict[str, Any], origin: Origin = _in_config_yaml) -> list[Sample]:
    """Check the whole config; return every sample resolved, or raise one ConfigError listing all
    problems (each naming the file it came from, the model, the sample and the key)."""
    schema = load_schema()
    problems = _schema_errors(config, schema, "", origin)
    if problems:
        raise ConfigError(_format(problems))
    samples: list[Sample] = []
    for model in MODELS:
        section = config[model]
        settings_schema = _subschema(schema, f"{model}_settings")
        for name, overrides in section["samples"].items():
            settings = resolve_sample(section["defaults"], overrides)
            prefix = f"{model} sample '{name}': "
            sample_path = (model, "samples", name)
            sample_problems = _schema_errors(
                settings, settings_schema, prefix, origin, base=sample_path
            )
            if not sample_problems:
                checks = _fc_layer_checks if model == "fc" else _transformer_layer_checks
                at_block = f"{origin([*sample_path, 'block_size'])}: {prefix}"
                density = "densities" if model == "fc" else "sparsity"
                at_density = f"{origin([*sample_path, density])}: {prefix}"
                sample_problems = [at_block + p for p in checks(settings)]
                sample_problems += [at_density + p for p in _min_blocks_check(model, settings)]
            problems += sample_problems
            samples.append(Sample(model=model, name=name, settings=settings))
    if not samples and not problems:
        problems.append(
            f"{origin(['fc'])}: no samples: add at least one under fc/samples or "
            "transformer/samples"
        )
    if problems:
        raise ConfigError(_format(problems))
    return samples


def _format(problems: list[str]) -> str:
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"Invalid configuration ({len(problems)} problem(s)); no job was started:\n{lines}"


def check_config_files(paths: list[str | Path]) -> None:
    """Re-read the config files with the strict loader: Snakemake's own loader silently keeps the
    last of two equal keys, which would drop a sample given twice."""
    for path in paths:
        load_yaml_strict(path)
