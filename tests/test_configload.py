"""Config mistakes get a place: YAML syntax errors with file, line and column; problems with the
file that set the key (config.yaml or a --configfile); an unknown sample with the known ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from dynsparse.config import ConfigError, load_yaml_strict, validate_config
from dynsparse.configload import ConfigFiles, ConfigSyntaxError, check_yaml_syntax, main
from pipeline_helpers import make_workdir, snakemake

REPO = Path(__file__).resolve().parents[1]


def test_a_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("render:\n  cmap: magma\n  gif_delay: [20\nfc: {}\n")
    with pytest.raises(ConfigSyntaxError, match=rf"^{bad}:4:3: YAML syntax error: expected ','"):
        check_yaml_syntax([bad])
    assert main([str(bad)]) == 1


def test_a_tab_is_located(tmp_path: Path) -> None:
    bad = tmp_path / "tab.yaml"
    bad.write_text("render:\n\tcmap: magma\n")
    with pytest.raises(ConfigSyntaxError, match=rf"^{bad}:2:1: "):
        check_yaml_syntax([bad])


def test_origin_is_the_last_file_that_sets_the_key(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("fc:\n  samples:\n    mine:\n      block_size: 7\n")
    files = ConfigFiles([REPO / "config.yaml", extra])
    assert files.origin(["fc", "samples", "mine", "block_size"]) == f"{extra}:4"
    # A setting the sample does not override comes from the defaults in config.yaml.
    line = files.origin(["fc", "samples", "mine", "hidden_size"])
    assert line.startswith(f"{REPO / 'config.yaml'}:")
    assert (
        "hidden_size"
        in (REPO / "config.yaml").read_text().splitlines()[int(line.rsplit(":", 1)[1]) - 1]
    )


def test_a_problem_from_a_configfile_names_that_file(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("fc:\n  samples:\n    mine: {block_size: 7}\n")
    config = load_yaml_strict(REPO / "config.yaml")
    config["fc"]["samples"]["mine"] = {"block_size": 7}
    files = ConfigFiles([REPO / "config.yaml", extra])
    with pytest.raises(ConfigError) as error:
        validate_config(config, origin=files.origin)
    assert f"{extra}:3: fc sample 'mine': block_size: 7 is not one of" in str(error.value)
    assert "config.yaml" not in str(error.value)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Dry runs only: the data path is never read.
    return make_workdir(tmp_path_factory.mktemp("configload"), REPO / "config.yaml")


def test_snakemake_names_the_place_of_a_syntax_error(workdir: Path) -> None:
    config = workdir / "config.yaml"
    original = config.read_text()
    try:
        config.write_text(original.replace("  cmap: magma", "\tcmap: magma"))
        result = snakemake(workdir, "--dry-run", check=False)
        assert result.returncode != 0
        output = result.stdout + result.stderr
        line = original.splitlines().index("  cmap: magma") + 1
        assert f"config.yaml:{line}:1: YAML syntax error" in output, output[-2000:]
        assert "not valid JSON or YAML" not in output
    finally:
        config.write_text(original)


def test_snakemake_names_the_configfile_of_a_bad_value(workdir: Path) -> None:
    extra = workdir / "mine.yaml"
    extra.write_text("render:\n  gif_delay: 0\n")
    result = snakemake(workdir, "--dry-run", "--configfile", str(extra), check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"{extra}:2: render/gif_delay:" in output, output[-2000:]


def test_an_unknown_sample_in_a_target_lists_the_known_ones(workdir: Path) -> None:
    result = snakemake(workdir, "--dry-run", "results/fc/tiny_fcc/summary.json", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "MissingRuleException" not in output
    known = "known fc samples: m_random, m_static, tiny_fc."
    assert f"no fc sample named 'tiny_fcc' in the config; {known}" in output
