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
    experiment_pictures,
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
        resolved.pop("seeds", None)
        resolved.pop("baseline", None)
        resolved.update(seed=sample.seeds[0], validation=config["validation"])
        assert json.loads(sample.settings_json) == resolved


def _sample(samples: list, model: str, name: str):
    return next(s for s in samples if (s.model, s.name) == (model, name))


def test_seeds_come_from_the_defaults_or_the_sample(config: dict) -> None:
    config["fc"]["defaults"]["seeds"] = 3
    config["fc"]["samples"]["dense"] = {"densities": [1.0, 1.0], "seeds": [7, 2]}
    samples = validate_config(config)
    assert _sample(samples, "fc", "rigl_0.1_0.3").seeds == (1, 2, 3)
    dense = _sample(samples, "fc", "dense")
    assert dense.seeds == (7, 2) and dense.settings.seed == 7  # the first seed: the pictures'
    assert json.loads(dense.settings_json_for(2))["seed"] == 2
    assert dense.settings_for(2).densities == dense.settings.densities


def test_without_seeds_the_single_seed_is_used(config: dict) -> None:
    config["fc"]["defaults"].pop("seeds", None)
    config["fc"]["defaults"]["seed"] = 11
    assert _sample(validate_config(config), "fc", "dense").seeds == (11,)


@pytest.mark.parametrize(
    ("seeds", "message"),
    [([1, 1], "listed more than once"), (0, "must be positive"), ([], "seeds")],
)
def test_bad_seeds_name_the_sample(config: dict, seeds: object, message: str) -> None:
    config["fc"]["samples"]["dense"] = {"densities": [1.0, 1.0], "seeds": seeds}
    error = _error(config)
    assert "fc" in error and "dense" in error and message in error, error


def test_validation_size_reaches_every_sample(config: dict) -> None:
    config["validation"] = 0
    assert {s.settings.validation for s in validate_config(config)} == {0}
    config["validation"] = -1
    assert "validation" in _error(config)


def test_sweeps_generate_validated_samples(config: dict) -> None:
    config["fc"]["sweeps"] = {
        "density": {"grid": {"densities": [[0.05, 0.3], [0.2, 0.3]], "method": ["rigl", "static"]}}
    }
    samples = validate_config(config)
    names = [s.name for s in samples if s.name.startswith("density_")]
    assert names == [
        "density_d0.05-0.3_rigl",
        "density_d0.05-0.3_static",
        "density_d0.2-0.3_rigl",
        "density_d0.2-0.3_static",
    ]
    point = _sample(samples, "fc", "density_d0.2-0.3_static")
    assert point.settings.densities == (0.2, 0.3) and point.settings.rigl.method == "static"
    assert point.seeds == _sample(samples, "fc", "dense").seeds  # the defaults' seeds


def test_a_generated_sample_is_checked_like_a_written_one(config: dict) -> None:
    config["fc"]["sweeps"] = {"bad": {"grid": {"block_size": [16, 3]}}}
    error = _error(config)
    assert "fc sample 'bad_bs3'" in error and "block_size" in error, error


def test_a_sweep_name_clash_is_an_error(config: dict) -> None:
    config["fc"]["samples"]["m_static"] = {"method": "static"}
    config["fc"]["sweeps"] = {"m": {"grid": {"method": ["static", "rigl"]}}}
    error = _error(config)
    assert "m_static" in error and "also a sample" in error, error


def test_an_unknown_baseline_is_an_error(config: dict) -> None:
    config["fc"]["samples"]["dense"] = {"densities": [1.0, 1.0], "baseline": "nothing"}
    error = _error(config)
    assert "baseline" in error and "'nothing'" in error and "dense" in error, error


def test_an_experiment_runs_only_its_own_samples(config: dict) -> None:
    config["experiment"] = {
        "name": "mine",
        "fc": {
            "samples": {"base": {"method": "static"}},
            "sweeps": {"s": {"base": "base", "grid": {"densities": [[0.2, 0.3]]}, "seeds": 2}},
        },
    }
    samples = validate_config(config)
    assert [(s.model, s.name, s.seeds) for s in samples] == [
        ("fc", "base", (1, 2, 3)),
        ("fc", "s_d0.2-0.3", (1, 2)),
    ]
    assert _sample(samples, "fc", "s_d0.2-0.3").settings.rigl.method == "static"


def test_an_experiment_makes_pictures_only_when_asked(config: dict) -> None:
    """configs/grow-batches.yaml sets `pictures: true`; other example configs make none."""
    assert experiment_pictures(config)  # the default pipeline
    config["experiment"] = {"name": "mine", "fc": {"samples": {"x": {}}}}
    assert not experiment_pictures(config)
    grow = load_yaml_strict(REPO / "configs" / "grow-batches.yaml")
    config["experiment"] = grow["experiment"]
    assert experiment_pictures(config)
    samples = {s.name: s for s in validate_config(config)}
    assert {n: s.settings.rigl.grow_batches for n, s in samples.items()} == {
        "rigl_0.1_0.3_g1": 1,
        "rigl_0.1_0.3_g10": 10,
    }
    assert samples["rigl_0.1_0.3_g10"].baseline == "rigl_0.1_0.3_g1"
    config["experiment"]["pictures"] = "yes"
    assert "pictures" in _error(config)


@pytest.mark.parametrize("name", ["fc", "summary", "Bad Name"])
def test_an_experiment_name_must_be_a_free_folder(config: dict, name: str) -> None:
    config["experiment"] = {"name": name, "fc": {"samples": {"x": {}}}}
    assert "experiment name" in _error(config)


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
