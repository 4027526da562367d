"""Tokenized training rows cached by content: the same rows through the same tokenizer, template and settings are
tokenized once.

Rerunning a recipe (a resume after a kill, a new learning rate, another benchmark side) tokenizes exactly what it
tokenized before; on a SQuAD-size set that is minutes of CPU. `datasets`' own map cache cannot be used for it: its
fingerprints hash the mapped *function* (here an encoder holding a tokenizer), which falls back to random hashes, and
in-memory datasets have no cache files at all. So genqa keys the cache itself, on everything the encoded rows depend
on:

- the rows' content (their Arrow data, in order);
- the tokenizer (the fast tokenizer's full serialization, its special tokens), the template text, `max_length`,
  response-only loss, the task and its arguments;
- the source of the modules that render and tokenize (a genqa change re-tokenizes) and the versions of transformers,
  tokenizers and jinja2.

Entries live in `$GENQA_CACHE/encoded/<key>/` (a `datasets.save_to_disk` folder plus the encoding report), written to a
temporary folder and renamed when complete; the oldest entries are removed past `GENQA_ENCODED_CACHE_GB` (default 2)
of total size. `GENQA_ENCODED_CACHE=0` turns the cache off. Slow (Python) tokenizers are not cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
from datasets import Dataset, load_from_disk

from genqa.files import cache_dir, write_atomic
from genqa.messages import say

REPORT_FILE = "encoding_report.json"


#: the modules (next to this one) whose code shapes the encoded rows
CODE_FILES = ("encoding.py", "templates.py", "task.py", "tasks.py", "mcq_format.py", "answers.py")


def _code_digest() -> str:
    """The source of the modules whose behaviour shapes the encoded rows."""
    h = hashlib.sha256()
    for name in CODE_FILES:
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()


def _rows_digest(dataset: Dataset) -> str:
    """The rows' content, in order (Arrow IPC bytes of each batch)."""
    h = hashlib.sha256()
    for batch in dataset.with_format("arrow").iter(batch_size=20_000):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_table(batch)
        h.update(sink.getvalue())
    return h.hexdigest()


def encoding_key(encoder, dataset: Dataset) -> str | None:
    """The cache key of `dataset` encoded by `encoder`, or None when it cannot be keyed (a slow tokenizer)."""
    import jinja2
    import tokenizers
    import transformers

    tok = encoder.tokenizer
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        return None
    parts = [_code_digest(), type(encoder).__qualname__, type(tok).__qualname__, backend.to_str(),
             json.dumps(tok.special_tokens_map, sort_keys=True, default=str), encoder.template or "",
             str(encoder.max_length), str(encoder.completion_only_loss), type(encoder.task).__qualname__,
             json.dumps(asdict(encoder.task.args), sort_keys=True, default=str),
             transformers.__version__, tokenizers.__version__, jinja2.__version__, _rows_digest(dataset)]
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:24]


def _enabled() -> bool:
    return os.environ.get("GENQA_ENCODED_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def _load(folder: Path, report_type: type):
    try:
        report = report_type(**json.loads((folder / REPORT_FILE).read_text(encoding="utf-8")))
        return load_from_disk(str(folder)), report
    except (OSError, ValueError, TypeError):
        return None  # damaged or from an older layout: encode again (the entry is replaced)


def _save(folder: Path, dataset: Dataset, report) -> None:
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))  # unique, never a planted link
    quiet = are_progress_bars_disabled()
    disable_progress_bars()  # no "Saving the dataset" bar: the cache is bookkeeping, not a step of the run
    try:
        dataset.save_to_disk(str(tmp))
        write_atomic(tmp / REPORT_FILE, json.dumps(report.to_dict(), ensure_ascii=False))
        os.replace(tmp, folder)  # fails when another process (a second rank) wrote the entry first: keep theirs
    except OSError:  # that, or a full disk: the run goes on without caching
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if not quiet:
            enable_progress_bars()


def _prune(root: Path, keep: Path) -> None:
    """Remove the least recently used entries past the size budget (never `keep`), and temporary folders of killed
    runs."""
    limit = float(os.environ.get("GENQA_ENCODED_CACHE_GB", "2")) * 1e9
    entries = []
    for entry in root.iterdir():
        if entry.name.startswith(".") and time.time() - entry.stat().st_mtime > 3600:
            shutil.rmtree(entry, ignore_errors=True)  # a temporary folder left by a killed run
        elif entry.is_dir() and not entry.name.startswith("."):
            size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
            entries.append((entry.stat().st_mtime, size, entry))
    total = sum(size for _, size, _ in entries)
    for _, size, entry in sorted(entries):
        if total <= limit:
            break
        if entry != keep:
            shutil.rmtree(entry, ignore_errors=True)
            total -= size


def cached_encoding(encoder, dataset: Dataset, split: str, encode: Callable[[Dataset, str], tuple[Dataset, Any]],
                    report_type: type) -> tuple[Dataset, Any]:
    """`encode(dataset, split)`, or its cached result for the same content (`report_type`: the report's dataclass,
    rebuilt from its saved fields)."""
    key = encoding_key(encoder, dataset) if _enabled() and len(dataset) else None
    if key is None:
        return encode(dataset, split)
    root = cache_dir() / "encoded"
    folder = root / key
    if folder.is_dir():
        hit = _load(folder, report_type)
        if hit is None:
            shutil.rmtree(folder, ignore_errors=True)  # damaged: encoded again below
        else:
            os.utime(folder)
            encoded, report = hit
            report.split = split
            say(f"[genqa] {split}: {len(dataset)} rows tokenized before, reused from {folder}")
            return encoded, report
    start = time.perf_counter()
    encoded, report = encode(dataset, split)
    seconds = time.perf_counter() - start
    say(f"[genqa] {split}: tokenized {len(dataset)} rows in {seconds:.1f} s ({len(dataset) / max(seconds, 1e-9):.0f} "
        "rows/s); cached for reruns")
    root.mkdir(parents=True, exist_ok=True)
    _save(folder, encoded, report)
    _prune(root, folder)
    if folder.is_dir():
        hit = _load(folder, report_type)  # memory-mapped from the cache: the same rows, no second copy in memory
        if hit is not None:
            return hit[0], report
    return encoded, report
