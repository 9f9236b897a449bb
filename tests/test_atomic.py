from __future__ import annotations

import os
from pathlib import Path

import pytest
from dynsparse.atomic import atomic_path, write_json


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_written_file_has_the_usual_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.txt"
    old = os.umask(0o022)
    try:
        with atomic_path(target) as tmp:
            tmp.write_text("ok")
    finally:
        os.umask(old)
    assert target.read_text() == "ok"
    assert target.stat().st_mode & 0o777 == 0o644
