"""The conda environment for `--sdm conda` carries exactly the pip pins of envs/requirements.txt."""

from __future__ import annotations

from pathlib import Path

import yaml

ENVS = Path(__file__).resolve().parents[1] / "envs"


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name, _, version = line.partition("==")
        assert version, f"{line!r} is not pinned with =="
        pins[name.strip().lower()] = version.strip()
    return pins


def test_conda_environment_parses_and_matches_pip_pins() -> None:
    env = yaml.safe_load((ENVS / "environment.yaml").read_text())
    assert any(str(dep).startswith("python=3.11") for dep in env["dependencies"])
    pip_section = next(dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict))
    requirements = _pins((ENVS / "requirements.txt").read_text().splitlines())
    assert _pins(pip_section) == requirements


def test_runtime_pins_name_the_stack() -> None:
    requirements = _pins((ENVS / "requirements.txt").read_text().splitlines())
    assert "tensorflow-cpu" in requirements
    assert requirements["snakemake"].startswith("9.")
    # TensorBoard ships in lockstep with TensorFlow: the same major.minor release.
    release = requirements["tensorflow-cpu"].split(".")[:2]
    assert requirements["tensorboard"].split(".")[:2] == release
    for name in ("numpy", "imageio", "pyyaml", "matplotlib", "tqdm"):
        assert name in requirements
