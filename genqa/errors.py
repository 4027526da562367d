"""The one base class of errors a user can cause, so every command reports them the same way."""

from __future__ import annotations

import sys
from collections.abc import Callable


class GenqaError(Exception):
    """A recipe, data file, template, prediction set or merge that genqa cannot use. Its message names the file, row
    or key and what to do; the command-line entry points print it as `genqa.<command>: error: ...` and exit 2."""


class DataError(GenqaError, ValueError):
    """Data a user supplied that genqa cannot use; the message names the file, row or column and what to do."""


def report_errors(prog: str, run: Callable[[], int]) -> int:
    """Run a command's body; a `GenqaError` becomes one line `<prog>: error: <message>` on stderr and exit code 2."""
    try:
        return run()
    except GenqaError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
