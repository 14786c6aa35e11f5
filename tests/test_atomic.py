"""Atomic writes leave no temp files and give files the permissions a plain open() would."""

import os
import stat

import pytest

from prune_nas.core.atomic import atomic_write
from prune_nas.core.genome import atomic_write_text


def test_written_files_are_readable_by_others_like_open_would(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
    finally:
        os.umask(old)
    assert mode == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")

    def boom(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
