"""The one base class of errors a user can cause, so every command reports them the same way."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable

#: errno values of file-system failures the user's machine or arguments cause (not genqa bugs)
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_FILE_SYSTEM = {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EROFS, errno.ELOOP} | _DISK_FULL


class GenqaError(Exception):
    """A recipe, data file, template, prediction set or merge that genqa cannot use. Its message names the file, row
    or key and what to do; the command-line entry points print it as `genqa.<command>: error: ...` and exit 2."""


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def file_system_message(err: BaseException) -> str | None:
    """The one-line message for a full disk or a path that cannot be written (a permission, a file where a folder
    belongs, a link refused), or None when `err` is none of these. A full disk is also recognised through
    `torch.save`'s `RuntimeError` ("unexpected pos"), whose cause is lost."""
    for e in _chain(err):
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            where = f" while writing {e.filename}" if e.filename else ""
            return (f"no space left on the device{where}; nothing written so far is lost: free some space and rerun "
                    "the same command (a run resumes from its last complete checkpoint).")
        if isinstance(e, RuntimeError) and ("unexpected pos" in str(e) or "No space left" in str(e)):
            return ("no space left on the device while saving a checkpoint; nothing written so far is lost: free some "
                    "space and rerun the same command (a run resumes from its last complete checkpoint).")
    if isinstance(err, OSError) and err.errno in _FILE_SYSTEM and err.filename:
        hint = {errno.ENOTDIR: "a file stands where a folder is needed",
                errno.EISDIR: "it is a folder where a file is needed",
                errno.ELOOP: "it is a symbolic link, which genqa does not write through"}.get(err.errno, err.strerror)
        return f"cannot use {err.filename}: {hint}. Choose another path (or fix its permissions) and rerun."
    return None


class DataError(GenqaError, ValueError):
    """Data a user supplied that genqa cannot use; the message names the file, row or column and what to do."""


def report_errors(prog: str, run: Callable[[], int]) -> int:
    """Run a command's body; a `GenqaError` (or a full disk / unwritable path) becomes one line
    `<prog>: error: <message>` on stderr and exit code 2."""
    try:
        return run()
    except GenqaError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as err:
        message = file_system_message(err)
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
