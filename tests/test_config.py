"""config.yaml validation: every bad input names the sample and the key, and no job starts."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dynsparse.config import (
    ConfigError,
    canonical_json,
    load_yaml_strict,
    resolve_sample,
    validate_config,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def config() -> dict:
    return load_yaml_strict(REPO / "config.yaml")


def test_default_config_is_valid_and_resolves_every_sample(config: dict) -> None:
    samples = validate_config(config)
    names = {(s.model, s.name) for s in samples}
    assert ("fc", "dense") in names and ("transformer", "rigl_s0.9") in names
    fc_dense = next(s for s in samples if (s.model, s.name) == ("fc", "dense"))
    assert fc_dense.settings.densities == (1.0, 1.0)
    assert fc_dense.settings.hidden_size == config["fc"]["defaults"]["hidden_size"]
    # The JSON form round-trips: params and summaries carry the resolved settings unchanged.
    for sample in samples:
        again = type(sample.settings).from_dict(json.loads(sample.settings_json))
        assert again == sample.settings
        resolved = resolve_sample(
            config[sample.model]["defaults"], config[sample.model]["samples"][sample.name]
        )
        assert json.loads(sample.settings_json) == resolved


def test_sample_override_merges_into_mappings() -> None:
    defaults = {"cosine_schedule": {"zero_steps": 0, "phase_delay": 0.0, "period": 0.5}, "a": 1}
    resolved = resolve_sample(defaults, {"cosine_schedule": {"period": 1.0}})
    assert resolved["cosine_schedule"] == {"zero_steps": 0, "phase_delay": 0.0, "period": 1.0}
    assert defaults["cosine_schedule"]["period"] == 0.5


def test_canonical_json_ignores_key_order() -> None:
    assert canonical_json({"b": 1, "a": [1, 2]}) == canonical_json({"a": [1, 2], "b": 1})


def _error(config: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(config)
    return str(caught.value)


@pytest.mark.parametrize(
    ("model", "override", "expected"),
    [
        ("fc", {"densities": [1.5, 0.3]}, "densities/0"),
        ("fc", {"densities": [0.0, 0.3]}, "densities/0"),
        ("fc", {"densities": [0.1]}, "densities"),
        ("fc", {"block_size": 3}, "block_size"),
        ("fc", {"block_size": 16, "hidden_size": 100}, "block_size: 16 does not divide"),
        ("fc", {"epochs": 0}, "epochs"),
        ("fc", {"batch_size": -4}, "batch_size"),
        ("fc", {"epochs": "ten"}, "epochs"),
        ("fc", {"learning_rate": 0}, "learning_rate"),
        ("fc", {"pooling": "MEAN"}, "pooling"),
        ("fc", {"densitys": [0.1, 0.3]}, "'densitys' was unexpected"),
        ("transformer", {"sparsity": 1.0}, "sparsity"),
        ("transformer", {"block_size": 16, "ff_size": 40}, "ff_size (40)"),
        ("transformer", {"method": "prune"}, "method"),
    ],
)
def test_bad_sample_setting_names_model_sample_and_key(
    config: dict, model: str, override: dict, expected: str
) -> None:
    bad = copy.deepcopy(config)
    bad[model]["samples"]["bad_one"] = override
    message = _error(bad)
    assert f"{model} sample 'bad_one'" in message
    assert expected in message


@pytest.mark.parametrize("name", ["../escape", "has space", "", "-dash", "a/b", "x" * 65])
def test_unsafe_sample_name_is_rejected(config: dict, name: str) -> None:
    bad = copy.deepcopy(config)
    bad["fc"]["samples"][name] = {}
    assert "fc/samples" in _error(bad)


def test_unknown_top_level_key_is_rejected(config: dict) -> None:
    bad = copy.deepcopy(config)
    bad["trainer"] = {}
    assert "'trainer' was unexpected" in _error(bad)


def test_all_problems_are_reported_together(config: dict) -> None:
    bad = copy.deepcopy(config)
    bad["fc"]["samples"]["one"] = {"epochs": 0}
    bad["transformer"]["samples"]["two"] = {"heads": 0}
    message = _error(bad)
    assert "fc sample 'one'" in message and "transformer sample 'two'" in message
    assert "2 problem(s)" in message


def test_duplicate_sample_name_is_rejected(tmp_path: Path) -> None:
    text = (REPO / "config.yaml").read_text()
    text = text.replace(
        "    dense: {densities: [1.0, 1.0]}\n",
        "    dense: {densities: [1.0, 1.0]}\n    dense: {epochs: 2}\n",
        1,
    )
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="'dense' appears twice"):
        load_yaml_strict(path)


def test_invalid_config_stops_snakemake_before_any_job(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["fc"]["samples"]["broken"] = {"block_size": 5}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--cores",
            "1",
            "--configfile",
            str(path),
            "--replace-workflow-config",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "fc sample 'broken'" in output and "block_size" in output
    assert "Building DAG" not in output
