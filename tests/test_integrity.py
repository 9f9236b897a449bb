"""data/mnist.npz is checked against the sha256 recorded when it was fetched, before training."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dynsparse.integrity import (
    MnistDamagedError,
    mnist_problem,
    record_path,
    sha256_of,
    verify_mnist,
    write_record,
)


@pytest.fixture
def fetched(tmp_path: Path) -> Path:
    npz = tmp_path / "data" / "mnist.npz"
    npz.parent.mkdir()
    npz.write_bytes(b"pretend this is MNIST" * 1000)
    write_record(npz, sha256_of(npz))
    return npz


def test_an_intact_file_passes(fetched: Path) -> None:
    assert verify_mnist(fetched) == fetched and mnist_problem(fetched) is None
    assert record_path(fetched).read_text().startswith(sha256_of(fetched))


def test_a_damaged_file_is_named_with_both_hashes_and_the_fix(fetched: Path) -> None:
    expected = sha256_of(fetched)
    with open(fetched, "r+b") as handle:
        handle.seek(100)
        handle.write(b"XX")
    with pytest.raises(MnistDamagedError) as error:
        verify_mnist(fetched)
    message = str(error.value)
    assert f"{fetched} is damaged" in message
    assert f"its sha256 is {sha256_of(fetched)}" in message and expected in message
    assert "Delete it and rerun to fetch it again" in message


def test_a_missing_file_or_record_says_so(fetched: Path) -> None:
    record_path(fetched).unlink()
    with pytest.raises(MnistDamagedError, match="mnist.npz.sha256 is missing"):
        verify_mnist(fetched)
    fetched.unlink()
    with pytest.raises(MnistDamagedError, match="mnist.npz is missing"):
        verify_mnist(fetched)


def test_recording_the_same_hash_again_leaves_the_record_untouched(fetched: Path) -> None:
    record = record_path(fetched)
    os.utime(record, ns=(1, 1_000_000_000))
    write_record(fetched, sha256_of(fetched))
    assert record.stat().st_mtime_ns == 1_000_000_000
    write_record(fetched, "0" * 64)
    assert record.read_text().startswith("0" * 64)
