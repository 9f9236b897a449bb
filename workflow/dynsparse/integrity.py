"""Is data/mnist.npz still the file that was fetched? Its sha256, recorded beside it.

`dynsparse.data` writes the record when it fetches; the training stage calls `verify_mnist`
before use (about 30 ms for MNIST), and the Snakefile asks `mnist_problem` at parse time so that
even a dry run says when the file was damaged. Training imports only this small module, so
editing the fetching code does not rerun any training.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from dynsparse.atomic import atomic_path


def sha256_of(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


RECORD_SUFFIX = ".sha256"


class MnistDamagedError(RuntimeError):
    """data/mnist.npz is not the file that was fetched (or is gone); the message says the fix."""


def record_path(npz: str | Path) -> Path:
    """Where the sha256 of a fetched file is recorded: beside it, `mnist.npz.sha256`."""
    npz = Path(npz)
    return npz.with_name(npz.name + RECORD_SUFFIX)


def write_record(npz: str | Path, digest: str) -> Path:
    """Record `digest` for `npz`, leaving an identical record untouched (its time stamp too)."""
    record = record_path(npz)
    text = f"{digest}  {Path(npz).name}\n"
    if not (record.is_file() and record.read_text() == text):
        with atomic_path(record) as tmp:
            tmp.write_text(text)
    return record


def recorded_sha256(npz: str | Path) -> str:
    record = record_path(npz)
    try:
        return record.read_text().split()[0]
    except (OSError, IndexError) as error:
        raise MnistDamagedError(
            f"{record} is missing or empty, so {npz} cannot be checked. Delete {npz} and rerun "
            "to fetch it again."
        ) from error


def mnist_problem(npz: str | Path) -> str | None:
    """None when `npz` matches its recorded sha256, else what is wrong and how to fix it."""
    npz = Path(npz)
    if not npz.is_file():
        return f"{npz} is missing. Rerun the workflow to fetch it again."
    expected = recorded_sha256(npz)
    found = sha256_of(npz)
    if found != expected:
        return (
            f"{npz} is damaged: its sha256 is {found}, but {expected} was recorded in "
            f"{record_path(npz)} when it was fetched. Delete it and rerun to fetch it again "
            f"(rm {npz}); trainings whose data did not change are not rerun."
        )
    return None


def verify_mnist(npz: str | Path) -> Path:
    """Raise MnistDamagedError unless `npz` is byte for byte the file that was fetched."""
    problem = mnist_problem(npz)
    if problem is not None:
        raise MnistDamagedError(problem)
    return Path(npz)
