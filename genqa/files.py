"""Where and how genqa writes files: its cache folder, and files written so that a crash never leaves a half-written
one behind."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """genqa's cache folder (`$GENQA_CACHE`, default `~/.cache/genqa`): tiny models, converted GGUF models, the CPU
    probe."""
    return Path(os.environ.get("GENQA_CACHE", Path.home() / ".cache" / "genqa"))


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
