"""Where and how genqa writes files: its cache folder, and files written so that a crash, a full disk or a planted
link never leaves a half-written or redirected one.

`write_atomic` is the one way genqa replaces a file: the bytes go to a temp file created exclusively
(`tempfile.mkstemp`: `O_CREAT | O_EXCL`, a unique random name, so a symlink planted at a predictable name is never
followed) in the target's own folder, are fsynced, and the temp file is renamed over the target (`os.replace`: a link
at the target's name is replaced, never written through); the folder is then fsynced so the rename survives a power
cut. A failed write (a full disk) removes its temp file and leaves the old file as it was.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """genqa's cache folder (`$GENQA_CACHE`, default `~/.cache/genqa`): tiny models, converted GGUF models, the CPU
    probe."""
    return Path(os.environ.get("GENQA_CACHE", Path.home() / ".cache" / "genqa"))


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename or a new file in `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def unwritable(path: str | os.PathLike, folder: bool) -> str | None:
    """Why genqa could not write `path` (a folder when `folder`, else a file), or None: it exists as the wrong kind,
    a file stands where one of its folders belongs, or its nearest existing folder is not writable."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        return f"{path} is {'a file' if folder else 'a folder'}, not {'a folder' if folder else 'a file'}"
    parent = path if folder and path.exists() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, so {path} cannot be made under it"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{parent} is not writable by this user ({path} would be written there)"
    return None


def _exclusive_temp(path: Path, suffix: str = ".tmp") -> tuple[int, str]:
    """A unique temp file created exclusively in `path`'s folder (`mkstemp`), with the permissions a plain new file
    gets (0666 less the umask: what the user's tools expect to read), not mkstemp's owner-only 0600."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)
    return fd, name


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Replace `path` with `data` (text is written as UTF-8) atomically: unique exclusive temp file in the same
    folder, fsync, `os.replace`, fsync of the folder. On any failure the temp file is removed and the old file kept."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = _exclusive_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_new(path: str | os.PathLike, data: str) -> None:
    """Write `data` (UTF-8) to `path`, which must not exist: complete and fsynced in a unique temp file beside it, then
    hard-linked to `path` (`os.link` fails when `path` exists, so a file created meanwhile is never overwritten;
    `FileExistsError`). Where the filesystem has no hard links, `path` is created exclusively (`open(path, "x")`)."""
    path = Path(path)
    fd, tmp = _exclusive_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # no hard links here (some network and FAT filesystems)
            with open(path, "x", encoding="utf-8") as out:
                out.write(data)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    fsync_dir(path.parent)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file another library wrote by name to disk (before `os.replace` puts it in place)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stale_temps(out: str | os.PathLike) -> list[Path]:
    """The hidden temp names genqa's writers leave beside `out` when killed: `.OUT-XXXXXXXX` folders
    (`tempfile.mkdtemp(prefix=".OUT-")`) and `.OUT.XXXXXXXX.tmp[.ext]` files (`write_atomic`, `temp_file_beside`).
    Links are never listed (nothing is followed or removed through one)."""
    out = Path(out)
    folders = re.compile(rf"\.{re.escape(out.name)}-[A-Za-z0-9_]{{8}}")
    files = re.compile(rf"\.{re.escape(out.name)}\.[A-Za-z0-9_]{{8}}\.tmp(\.[A-Za-z0-9]+)?")
    if not out.parent.is_dir():
        return []
    return sorted(p for p in out.parent.iterdir() if not p.is_symlink() and (
        (p.is_dir() and folders.fullmatch(p.name)) or (p.is_file() and files.fullmatch(p.name))))


def clean_stale_temps(out: str | os.PathLike, command: str) -> None:
    """Remove the temp folders and files of killed `command`s into `out`; call it only under `out`'s output lock
    (`genqa.locks.output_lock`), so none of them is in use."""
    article = "an" if command[:1] in "aeiou" else "a"
    for path in stale_temps(out):
        print(f"[genqa] removing {path}: left by {article} {command} into {out} that was killed")
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def temp_file_beside(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A new empty file with a unique name in `path`'s folder, created exclusively (never a planted link), for a
    writer that needs a file name (a library that writes to a path); `os.replace` it over `path` when complete and
    unlink it on failure."""
    path = Path(path)
    fd, name = _exclusive_temp(path, suffix)
    os.close(fd)
    return Path(name)


def open_append(path: str | os.PathLike):
    """Open `path` for appending text without following a symlink at its name (`O_NOFOLLOW`): a link planted there
    is refused (`OSError`) instead of written through."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(path, flags, 0o644), "a", encoding="utf-8")
