"""The method and model keys of issue 12 are checked before any job: model, sample, key named."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from dynsparse.config import ConfigError, load_yaml_strict, validate_config
from dynsparse.distributions import layer_densities

REPO = Path(__file__).resolve().parents[1]
LENET = {"hidden_sizes": [300, 100]}


@pytest.fixture(scope="module")
def config() -> dict:
    return load_yaml_strict(REPO / "config.yaml")


def _error(config: dict, model: str, override: dict[str, Any]) -> str:
    bad = copy.deepcopy(config)
    bad[model]["samples"] = {"bad_one": override}
    with pytest.raises(ConfigError) as caught:
        validate_config(bad)
    message = str(caught.value)
    assert f"{model} sample 'bad_one'" in message
    return message


@pytest.mark.parametrize(
    ("model", "override", "expected"),
    [
        ("fc", {"method": "deep_r"}, "method"),
        ("transformer", {"method": "gmp_x"}, "method"),
        ("fc", {"distribution": "lognormal", "density": 0.1}, "distribution"),
        ("fc", {"density": 0.1, "densities": [0.1, 0.3]}, "density: give a global density"),
        ("fc", {"distribution": "erk"}, "distribution: erk spreads a global density"),
        ("fc", {**LENET}, "densities: 2 values for 3 layers"),
        ("fc", {**LENET, "hidden_size": 64}, "give hidden_sizes or hidden_size, not both"),
        ("fc", {**LENET, "densities": [0.1, 0.1, 0.1], "block_size": 16}, "fc1's hidden_sizes"),
        ("fc", {**LENET, "density": 1e-6, "distribution": "erk"}, "cannot reach density"),
        ("fc", {"grow_batches": 751}, "grow_batches: 751 is more than the 750 batches"),
        ("fc", {"grow_batches": 0}, "grow_batches"),
        ("fc", {"update_end": 0}, "update_end"),
        ("fc", {"update_end": 1.5}, "update_end"),
        ("fc", {"regrow_dropped": "yes"}, "regrow_dropped"),
        ("transformer", {"layers": 0}, "layers"),
        ("transformer", {"grow_batches": 1000}, "grow_batches: 1000"),
    ],
)
def test_bad_method_or_model_key_names_model_sample_and_key(
    config: dict, model: str, override: dict, expected: str
) -> None:
    assert expected in _error(config, model, override)


def test_block_size_that_divides_every_lenet_layer_is_fine(config: dict) -> None:
    good = copy.deepcopy(config)
    good["fc"]["samples"] = {"lenet_b4": {**LENET, "densities": [0.1, 0.1, 1.0], "block_size": 4}}
    (sample,) = [s for s in validate_config(good) if s.model == "fc"]
    assert sample.settings.layer_block_sizes() == {"fc1": 4, "fc2": 4, "fc3": 1}


def test_a_sample_density_replaces_the_default_densities(config: dict) -> None:
    good = copy.deepcopy(config)
    good["fc"]["samples"] = {"erk": {**LENET, "density": 0.1, "distribution": "erk"}}
    (sample,) = [s for s in validate_config(good) if s.model == "fc"]
    settings = sample.settings
    assert settings.densities is None and settings.hidden_size is None
    shapes = {"fc1": (784, 300), "fc2": (300, 100), "fc3": (100, 10)}
    assert settings.layer_densities() == layer_densities(shapes, 0.1, "erk")
    # rigl's ERK for 784-300-100-10 at 90 %: about 0.920 / 0.770 / 0 sparsity
    assert settings.layer_densities()["fc1"] == pytest.approx(0.080, abs=0.001)
    assert settings.layer_densities()["fc2"] == pytest.approx(0.230, abs=0.001)
    assert settings.layer_densities()["fc3"] == 1.0
    assert '"hidden_size"' not in sample.settings_json and '"density":0.1' in sample.settings_json


def test_the_default_config_keeps_its_settings_text(config: dict) -> None:
    """The default FC keeps hidden_size and densities: no new key appears in its settings."""
    (rigl,) = [s for s in validate_config(config) if s.name == "rigl_0.1_0.3"]
    text = rigl.settings_json
    assert '"hidden_size":320' in text and '"densities":[0.1,0.3]' in text
    assert "hidden_sizes" not in text and '"density"' not in text
    assert '"regrow_dropped":true' in text


def test_the_literature_samples_are_valid_settings(config: dict) -> None:
    """configs/literature.yaml's samples, without the experiments issue's `seeds`, validate."""
    literature = load_yaml_strict(REPO / "configs" / "literature.yaml")
    merged = copy.deepcopy(config)
    merged["fc"]["defaults"].update(literature["fc"]["defaults"])
    samples = literature["experiment"]["fc"]["samples"]
    merged["fc"]["samples"] = {
        name: {k: v for k, v in sample.items() if k != "seeds"} for name, sample in samples.items()
    }
    resolved = {s.name: s.settings for s in validate_config(merged) if s.model == "fc"}
    assert set(resolved) == set(samples)
    assert resolved["dense"].layer_shapes() == {
        "fc1": (784, 300),
        "fc2": (300, 100),
        "fc3": (100, 10),
    }
    assert resolved["rigl_0.1"].layer_densities() == {"fc1": 0.1, "fc2": 0.1, "fc3": 0.1}
    sparse = {name: s for name, s in resolved.items() if name != "dense"}
    assert {s.rigl.method for s in sparse.values()} == {"set", "snfs", "rigl", "static"}
    assert {s.density for s in sparse.values()} == {0.1, 0.3}
