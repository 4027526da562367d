"""Atomic writes (`genqa.files`), the lock on a full disk, and how a full disk or an unusable path is reported."""

from __future__ import annotations

import errno
import os

import pytest

from genqa.errors import report_errors
from genqa.files import open_append, write_atomic
from genqa.locks import OutputLock
from genqa.submission import PredictionStore, write_submission


def test_a_link_planted_at_the_old_temp_names_is_never_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    shared = tmp_path / "shared"
    shared.mkdir()
    for name in (".sub.csv.tmp", ".sub.csv.predictions.jsonl.tmp"):
        (shared / name).symlink_to(victim)
    write_submission(shared / "sub.csv", ["a"], {"a": "x"})
    PredictionStore(shared / "sub.csv.predictions.jsonl", {"m": 1}).add([{"id": "a", "answer": "x"}])
    assert victim.read_text() == "precious"
    assert not (shared / "sub.csv").is_symlink() and (shared / "sub.csv").read_text() == "id,answer\na,x\n"
    assert not (shared / "sub.csv.predictions.jsonl").is_symlink()


def test_a_link_at_the_target_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "out.json").symlink_to(victim)
    write_atomic(tmp_path / "out.json", "{}")
    assert victim.read_text() == "precious" and not (tmp_path / "out.json").is_symlink()


def test_appending_refuses_a_planted_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "log.jsonl").symlink_to(victim)
    with pytest.raises(OSError) as err:
        open_append(tmp_path / "log.jsonl")
    assert err.value.errno == errno.ELOOP and victim.read_text() == "precious"


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "sub.csv"
    target.write_text("old")
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(OSError):
        write_atomic(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["sub.csv"]


def test_a_lock_on_a_full_disk_leaves_no_empty_lock_file(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _disk_full)
    lock = OutputLock(tmp_path / "genqa.lock", "output_dir x")
    with pytest.raises(OSError):
        lock.acquire()
    assert not (tmp_path / "genqa.lock").exists()
    monkeypatch.undo()
    lock.acquire()  # space freed: the next run takes the lock at once
    lock.release()


@pytest.mark.parametrize("error, phrase", [
    (OSError(errno.ENOSPC, "No space left on device", "/runs/x/genqa.lock"), "no space left on the device while "
     "writing /runs/x/genqa.lock; nothing written so far is lost"),
    (RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1024 vs 960"),
     "no space left on the device while saving a checkpoint"),
    (PermissionError(errno.EACCES, "Permission denied", "/ro/run"), "cannot use /ro/run: Permission denied"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "a.txt/genqa.lock"), "a file stands where a folder is"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "outdir"), "cannot use outdir: it is a folder"),
])
def test_file_system_failures_are_one_line_errors(error, phrase, capsys):
    def run() -> int:
        raise error

    assert report_errors("genqa.x", run) == 2
    err = capsys.readouterr().err
    assert err.startswith("genqa.x: error: ") and phrase in err


def test_other_runtime_errors_still_raise():
    def run() -> int:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        report_errors("genqa.x", run)


def test_written_files_get_the_usual_permissions_not_mkstemps_owner_only(tmp_path):
    import os
    import stat

    from genqa.files import temp_file_beside, write_atomic, write_new

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.csv", "x")
        write_new(tmp_path / "b.yaml", "y")
        beside = temp_file_beside(tmp_path / "c.gguf")
    finally:
        os.umask(old)
    for path in (tmp_path / "a.csv", tmp_path / "b.yaml", beside):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
