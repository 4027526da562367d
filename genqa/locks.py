"""One writer per output: a lock file next to (or inside) what a command writes.

`genqa.sft` locks its `output_dir` (`OUTPUT_DIR/genqa.lock`) and `genqa.generate` its `--out`
(`OUT.lock`), so a second process started on the same output stops with a message naming the process that holds it,
instead of both writing (two trainings into one folder both "succeed" and one is lost; two generates on one `--out`
both redo all the work).

Why a hand-written lock: nothing in the Hugging Face stack guards an output folder, and `filelock` (a transitive
dependency) releases its lock when the process dies but records nothing about the holder, so it cannot say who
holds it, and it is not one of genqa's declared dependencies. The lock here is a file created with
`O_CREAT | O_EXCL` (atomic: exactly one process creates it) holding the holder's pid, host, process start time and a
random token, as JSON.

A lock left behind by a killed process (SIGKILL runs no cleanup) is *stale* when its host is this host and its pid is
not alive, or is alive but started at another time (the pid was reused). A stale lock is taken over by renaming it
to a unique name first (atomic), checking that the renamed file is the stale lock that was read (not a fresh lock
another process created meanwhile, which is then put back), and creating the lock anew. A lock held on another host
cannot be checked from here: it is refused with a message saying which file to delete if that run is gone. A lock
file with unreadable content (a process killed between creating and writing it) is stale once it is older than
`UNREADABLE_GRACE_S`.

The lock is released when the `with` block ends and, as a safety net, at interpreter exit (`atexit`). In a
multi-process launch (`accelerate launch`, torchrun) only the main process (global rank 0) takes it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genqa.errors import GenqaError
from genqa.messages import is_main_process

#: seconds after which a lock file whose content cannot be read counts as left behind by a killed process
UNREADABLE_GRACE_S = 10.0


class LockError(GenqaError, RuntimeError):
    """The output is being written by another genqa process (or a lock file could not be taken)."""


def _start_time(pid: int) -> str | None:
    """The process start time (clock ticks since boot, /proc/PID/stat field 22), or None where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def holder_is_gone(holder: dict[str, Any]) -> bool:
    """True when the process a lock names ran on this host and is no longer running (a reused pid counts as gone)."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return True
    started = holder.get("start")
    return started is not None and _start_time(pid) not in (None, started)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class OutputLock:
    """An exclusive lock on one output; `acquire()` raises `LockError` naming the holder when it is taken."""

    def __init__(self, path: str | os.PathLike, what: str) -> None:
        self.path = Path(path)
        self.what = what  # e.g. "output_dir runs/x", for messages
        self.token = secrets.token_hex(8)
        self.held = False
        self.made_folder = False  # the folder was created for the lock: removed again if nothing else was written

    def _record(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid()),
                "since": time.strftime("%Y-%m-%d %H:%M:%S"), "token": self.token}

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(self._record()))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:  # a full disk: no empty lock file left behind to refuse the next run
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise
        return True

    def _take_over_stale(self, seen: dict[str, Any] | None) -> None:
        """Move a stale lock out of the way, unless another process replaced it since it was read."""
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}-{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # someone else removed it first
        if _read(aside) == seen:
            aside.unlink(missing_ok=True)
            return
        with contextlib.suppress(OSError):  # a fresh lock was moved by mistake: put it back if the place is free
            os.link(aside, self.path)
        aside.unlink(missing_ok=True)

    def _is_stale(self, holder: dict[str, Any] | None) -> bool:
        if holder is not None:
            return holder_is_gone(holder)
        try:
            return time.time() - self.path.stat().st_mtime > UNREADABLE_GRACE_S
        except FileNotFoundError:
            return True

    def acquire(self) -> None:
        """Take the lock or raise `LockError` saying who holds it; a stale lock is reported and taken over."""
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.made_folder = True
        for _ in range(5):
            if self._create():
                self.held = True
                atexit.register(self.release)
                return
            holder = _read(self.path)
            if not self._is_stale(holder):
                raise LockError(self._busy_message(holder))
            who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "a process killed while locking"
            print(f"[genqa] {self.path}: taking over a stale lock ({who} is no longer running)", flush=True)
            self._take_over_stale(holder)
        raise LockError(f"{self.what}: could not take the lock {self.path} (other processes keep taking it).")

    def _busy_message(self, holder: dict[str, Any] | None) -> str:
        if holder is None:
            who = "a process that is creating it right now"
        else:
            who = f"pid {holder.get('pid')} on host {holder.get('host')}, since {holder.get('since')}"
        elsewhere = holder is not None and holder.get("host") != socket.gethostname()
        hint = ("it runs on another host, so genqa cannot check it" if elsewhere else "it is still running")
        return (f"{self.what} is being written by another genqa process ({who}; {hint}). Wait for it to finish or "
                f"choose another output; if that process is gone, delete {self.path}.")

    def release(self) -> None:
        """Remove the lock file if this object holds it (idempotent), and the folder made for it if it is empty
        (a command refused before writing anything leaves no empty output folder behind)."""
        if not self.held:
            return
        self.held = False
        with contextlib.suppress(OSError):
            if (_read(self.path) or {}).get("token") == self.token:
                self.path.unlink()
        if self.made_folder:
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()
        atexit.unregister(self.release)


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, what: str, main_only: bool = True) -> Iterator[OutputLock | None]:
    """Hold the lock file `path` for the block (`what` names the output in messages). With `main_only` (training
    under a multi-process launch) only the main process takes it; the others yield None."""
    if main_only and not is_main_process():
        yield None
        return
    lock = OutputLock(path, what)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
