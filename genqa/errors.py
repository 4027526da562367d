"""The one base class of errors a user can cause, so every command reports them the same way."""

from __future__ import annotations


class GenqaError(Exception):
    """A recipe, data file, template, prediction set or merge that genqa cannot use. Its message names the file, row
    or key and what to do; the command-line entry points print it as `genqa.<command>: error: ...` and exit 2."""
