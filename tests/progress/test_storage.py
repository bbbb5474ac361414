"""Progress files: a failed save leaves the old file intact and no temporary file behind."""

from __future__ import annotations

import errno
import os
import stat
from datetime import datetime

import pytest

from ferryman.errors import ProgressFormatError
from ferryman.progress import FailedRecord, MigrationProgress, ProgressMetadata, storage
from ferryman.progress.storage import read_text, save_text_atomically

OLD = '{"old": "content"}'


def sample() -> MigrationProgress:
    stamp = datetime(2025, 8, 29, 0, 33, 51, 600238)
    progress = MigrationProgress(ProgressMetadata(stamp))
    progress.entry("app.M1").mark_succeeded([1, "é", (2**70, "x")])
    progress.entry("app.M1").mark_failed([FailedRecord(3, "d", "Traceback\n  boom", timestamp=stamp)])
    return progress


def test_save_and_load(tmp_path):
    path = tmp_path / "progress.json"
    sample().save(path)
    assert path.read_bytes() == sample().to_json().encode("utf-8")  # UTF-8, no final newline
    assert MigrationProgress.load(path) == sample()
    assert MigrationProgress.load(str(path)) == sample()
    assert os.listdir(tmp_path) == ["progress.json"]


def test_save_replaces_and_keeps_permissions(tmp_path):
    path = tmp_path / "progress.json"
    path.write_text(OLD)
    path.chmod(0o640)
    save_text_atomically(path, "new")
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_save_through_a_symlink_replaces_the_target(tmp_path):
    target = tmp_path / "real.json"
    target.write_text(OLD)
    link = tmp_path / "progress.json"
    link.symlink_to(target)
    save_text_atomically(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def _fail(code: int):
    def raiser(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return raiser


@pytest.mark.parametrize(
    "function, code, error_type",
    [
        ("fsync", errno.ENOSPC, OSError),
        ("replace", errno.EACCES, PermissionError),
        ("replace", errno.EXDEV, OSError),
    ],
)
def test_a_failed_save_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch, function, code, error_type):
    path = tmp_path / "progress.json"
    path.write_text(OLD)
    monkeypatch.setattr(storage.os, function, _fail(code))
    with pytest.raises(error_type) as caught:
        sample().save(path)
    monkeypatch.undo()
    assert path.read_text() == OLD
    assert os.listdir(tmp_path) == ["progress.json"]
    message = str(caught.value)
    assert str(path) in message and os.strerror(code) in message and "\n" not in message
    assert caught.value.errno == code


def test_a_failed_write_of_a_new_file_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(storage.os, "fsync", _fail(errno.EIO))
    with pytest.raises(OSError, match="cannot save"):
        save_text_atomically(tmp_path / "progress.json", "x")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_an_interrupt_during_a_save_leaves_no_temp_file(tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    path = tmp_path / "progress.json"
    path.write_text(OLD)
    monkeypatch.setattr(storage.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_text_atomically(path, "new")
    monkeypatch.undo()
    assert path.read_text() == OLD and os.listdir(tmp_path) == ["progress.json"]


def test_saving_into_a_missing_directory_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "progress.json"
    with pytest.raises(FileNotFoundError, match="cannot save .*nowhere"):
        save_text_atomically(path, "x")


def test_read_text_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_text(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError):
        MigrationProgress.load(tmp_path / "missing.json")


def test_read_text_accepts_a_bom_and_rejects_bad_utf8(tmp_path):
    path = tmp_path / "progress.json"
    path.write_bytes(b"\xef\xbb\xbf{}")
    assert read_text(path) == "{}"
    path.write_bytes(b'{"fatalErrors": ["caf\xe9"]}')
    with pytest.raises(ProgressFormatError, match="not UTF-8 text .byte 0xe9 at offset 21.") as caught:
        MigrationProgress.load(path)
    assert caught.value.source == str(path)


def test_load_errors_name_the_file(tmp_path):
    path = tmp_path / "progress.json"
    path.write_text('{"metadata": {"timestamp": "soon"}}')
    with pytest.raises(ProgressFormatError) as caught:
        MigrationProgress.load(path)
    assert caught.value.source == str(path) and caught.value.path == "$.metadata.timestamp"
    assert str(caught.value).startswith(f"{path}: invalid timestamp 'soon'")
