"""Data sources: read a hub dataset, a local file or folder, or SQuAD-format JSON into a `DatasetDict`.

`load_source` decides the reader (the validation split is `genqa.data.splits`). Rows come back with the source's
own columns; `genqa.data.tasks` maps them onto the task schema.

JSON and JSON Lines files are parsed here before any reader sees them: the layout is detected from the parsed
content (`genqa.data.layouts`), and a file datasets' JSON reader cannot take (one holding `null`, a bare value, a
list of non-objects, invalid UTF-8 or invalid JSON on some line; on `null` that reader dies with a segmentation
fault) is refused with a message naming the file and the line or element.

A `dataset_path` with glob characters (`data/*/*.json`) names several files of one format: each is read and checked
as above and they are concatenated in sorted path order (columns must agree; a mismatch names both files).
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, concatenate_datasets, load_dataset, load_from_disk

from genqa.data.layouts import (
    c3_rows,
    check_json_records,
    first_type_conflict,
    is_c3_json,
    is_squad_json,
    iter_squad_rows,
    squad_examples,
    squad_question_id,
    squad_version,
)
from genqa.errors import DataError

__all__ = ["DataError", "detect_format", "header_columns", "is_c3_json", "is_squad_json", "iter_squad_rows",
           "load_source", "read_records", "squad_examples", "squad_question_id", "squad_version"]

SUFFIX_FORMATS = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet", ".xlsx": "xlsx",
                  ".xls": "xlsx"}


def _read_json(path: str | os.PathLike) -> Any:
    """A JSON file's parsed content; the last file read is kept (detecting the layout of a .json file and then
    loading it reads and parses it once). Callers must not modify the result. Invalid UTF-8 or JSON raises a
    `DataError` naming the file and the position (`json.JSONDecodeError` is kept as its cause)."""
    p = Path(path).resolve()
    stat = p.stat()
    try:
        return _parse_json(str(p), stat.st_mtime_ns, stat.st_size)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err}); save the file as UTF-8.") from err
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err}).") from err
    except RecursionError:
        raise DataError(f"{path}: JSON values nested too deeply to read; a data file holds rows.") from None


@functools.lru_cache(maxsize=1)
def _parse_json(path: str, mtime_ns: int, size: int) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _jsonl_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file; invalid UTF-8, invalid JSON or a line that is not an object (`null`)
    raises a `DataError` naming the line."""
    rows = []
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}: line {n} is not UTF-8 text ({err}); save the file as UTF-8.") from err
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {n} is not valid JSON ({err}).") from err
            except RecursionError:
                raise DataError(f"{path}: line {n} nests JSON values too deeply to read; a line holds one row.") \
                    from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {n} holds a JSON {'null' if row is None else type(row).__name__}, "
                                "not a row object {\"column\": value}.")
            rows.append(row)
    return rows


def load_squad_json(path: str | os.PathLike) -> Dataset:
    """Read an official-layout SQuAD JSON file (v1.1 or v2.0, ids optional) as one flat `Dataset`."""
    data = _read_json(path)
    if not is_squad_json(data):
        raise DataError(f"{path}: not a SQuAD-layout JSON file (expected a top-level `data` list of articles).")
    rows = list(iter_squad_rows(data, str(path)))
    if not rows:
        raise DataError(f"{path}: the SQuAD file holds no questions.")
    return Dataset.from_list(rows)


def load_c3_json(path: str | os.PathLike) -> Dataset:
    """Read C3 (Chinese multiple-choice reading comprehension) into rows: id, context, question, choice, answer."""
    data = _read_json(path)
    if not is_c3_json(data):
        raise DataError(f"{path}: not a C3-layout JSON file (a list of [sentences, questions, id] documents).")
    rows = c3_rows(data, str(path))
    if not rows:
        raise DataError(f"{path}: the C3 file holds no questions.")
    return Dataset.from_list(rows)


def json_rows(path: str | os.PathLike) -> list[dict[str, Any]] | dict[str, Any]:
    """The parsed rows of a .json / .jsonl data file: a JSON list of objects (or one object), or JSON Lines of
    objects; anything else raises a `DataError` naming the file and the line or element."""
    try:
        data = _read_json(path)
    except DataError as err:
        if isinstance(err.__cause__, UnicodeDecodeError) or _several_values(err):
            return _jsonl_records(path)  # JSON Lines (or bad bytes): checked line by line, naming the line
        raise
    check_json_records(data, str(path))
    return data


def _several_values(err: DataError) -> bool:
    """True when JSON parsing stopped at a second value: the file is JSON Lines."""
    return isinstance(err.__cause__, json.JSONDecodeError) and err.__cause__.msg == "Extra data"


def _json_layout(path: Path) -> str:
    """`squad`, `c3` or `json` (row objects, checked by `json_rows`) for a .json file."""
    try:
        data = _read_json(path)
    except DataError as err:
        if not (isinstance(err.__cause__, UnicodeDecodeError) or _several_values(err)):
            raise
        data = None
    if is_squad_json(data):
        return "squad"
    if is_c3_json(data):
        return "c3"
    json_rows(path)
    return "json"


def matched_files(path: str) -> list[str] | None:
    """The files a glob pattern names, sorted (None when `path` is not a pattern); a pattern matching no file is an
    error."""
    if not any(c in path for c in "*?["):
        return None
    files = sorted(f for f in glob.glob(os.path.expanduser(path), recursive=True) if os.path.isfile(f))
    if not files:
        raise DataError(f"{path}: no file matches this pattern (working directory: {os.getcwd()}).")
    return files


def detect_format(path: str) -> str:
    """The reader for `path`: a file suffix, a `save_to_disk` folder, SQuAD JSON, or a hub id; for a glob pattern
    the one format all its files share."""
    files = matched_files(path)
    if files:
        formats = {f: detect_format(f) for f in files}
        if len(set(formats.values())) > 1:
            raise DataError(f"{path}: the files it matches are not all one format ("
                            + ", ".join(f"{f}: {fmt}" for f, fmt in formats.items()) + ").")
        return formats[files[0]]
    p = Path(path)
    if p.is_dir():
        if (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists() or (p / "state.json").exists():
            return "disk"
        raise DataError(f"{path}: a folder that is not a `datasets.save_to_disk` folder. Point `dataset_path` at a "
                        "data file or a saved dataset.")
    if p.is_file():
        fmt = SUFFIX_FORMATS.get(p.suffix.lower())
        if fmt is None:
            raise DataError(f"{path}: unknown file type {p.suffix!r}; use json, jsonl, csv, parquet or xlsx, or set "
                            "`dataset_format`.")
        return _json_layout(p) if fmt == "json" else fmt
    if p.suffix.lower() in SUFFIX_FORMATS or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", path) or path.startswith("."):
        raise DataError(f"{path}: file not found (working directory: {os.getcwd()}).")
    return "hub"


TABLE_SUFFIXES = (".csv", ".tsv", ".xlsx", ".xls", ".parquet")


def _excel_sheet(path: str | os.PathLike, sheet: str | None):
    """The sheet of a workbook to read: `sheet` (the recipe's `dataset_config`), else the first one; a first sheet
    with no rows while others have some is refused, naming the sheets and the key that picks one."""
    import pandas as pd

    with pd.ExcelFile(path) as book:
        names = [str(n) for n in book.sheet_names]
        if sheet is not None:
            if sheet not in names:
                raise DataError(f"{path}: no sheet {sheet!r} (`dataset_config`); its sheets are {', '.join(names)}.")
            return sheet
        if len(names) > 1 and book.parse(names[0], dtype=str, nrows=1).empty:
            filled = [n for n in names[1:] if not book.parse(n, dtype=str, nrows=1).empty]
            if filled:
                raise DataError(f"{path}: its first sheet {names[0]!r} holds no rows, and sheet(s) "
                                f"{', '.join(map(repr, filled))} do; pick one with `dataset_config: {filled[0]}` "
                                f"(sheets: {', '.join(names)}).")
        return names[0]


def read_frame(path: str | os.PathLike, sheet: str | None = None):
    """A csv / tsv / xlsx / parquet file as a pandas frame of text cells (ids like `001` keep their zeros; empty
    cells are ""); `sheet` picks a workbook's sheet (default: the first)."""
    import pandas as pd

    suffix = Path(path).suffix.lower()
    try:
        if suffix in (".xlsx", ".xls"):
            frame = pd.read_excel(path, sheet_name=_excel_sheet(path, sheet), dtype=str).fillna("")
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
            frame = frame.astype(object).where(frame.notna(), "")
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, sep="\t" if suffix == ".tsv" else ",")
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - pandas raises many types; name the file either way
        raise DataError(f"{path}: could not read it as {suffix[1:]} ({type(err).__name__}: {err}).") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def header_columns(path: str, fmt: str = "auto") -> list[str] | None:
    """The column names of a local data file without reading its rows (a table's header; the keys of a JSON / JSONL
    file's first row object), so `--dry_run` can name a missing column cheaply. None where the columns are only known
    after loading (hub ids, `save_to_disk` folders, SQuAD / C3 layouts, whose rows genqa builds itself); for a glob
    pattern, the first file's."""
    import pandas as pd

    files = matched_files(path)
    path = files[0] if files else path
    fmt = detect_format(path) if fmt == "auto" else fmt
    suffix = Path(path).suffix.lower()
    try:
        if fmt == "xlsx":
            return [str(c).strip() for c in pd.read_excel(path, nrows=0).columns]
        if fmt == "csv" and suffix in (".csv", ".tsv"):
            return [str(c).strip() for c in pd.read_csv(path, nrows=0, sep="\t" if suffix == ".tsv" else ",").columns]
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
    except Exception as err:  # noqa: BLE001 - pandas raises many types; name the file either way
        raise DataError(f"{path}: could not read its header as {fmt} ({type(err).__name__}: {err}).") from err
    if fmt in ("json", "jsonl"):
        rows = json_rows(path)
        first = rows[0] if isinstance(rows, list) and rows else rows
        return list(first) if isinstance(first, dict) else None
    return None


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a table file (csv, tsv, xlsx, parquet), a JSON list of objects or a JSONL file, as dicts."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return read_frame(p).to_dict(orient="records")
    if suffix not in (".json", ".jsonl"):
        raise DataError(f"{path}: unsupported file type {suffix!r}; use one of "
                        f"{', '.join(TABLE_SUFFIXES + ('.json', '.jsonl'))}.")
    rows = json_rows(p)
    if not isinstance(rows, list):
        raise DataError(f"{path}: must hold a JSON list of records (objects), or one object per line (JSONL).")
    return rows


def _load_hub(path: str, config: str | None):
    try:
        return load_dataset(path, config)
    except Exception as err:  # noqa: BLE001 - hub errors come in many types; the message is what matters
        raise DataError(f"{path}: could not load it as a hub dataset ({type(err).__name__}: {err}). Offline, "
                        "point `dataset_path` at a local file instead.") from err


def _load_with_datasets(path: str, fmt: str):
    try:
        return load_dataset(fmt, data_files=path, split="train")
    except Exception as err:  # noqa: BLE001 - the loaders raise many types; name the file either way
        raise DataError(f"{path}: could not read it as {fmt} ({type(err).__name__}: {err}).") from err


def _load_json_rows(path: str, config: str | None = None):
    """A .json / .jsonl file of row objects, checked by genqa (`json_rows`) and then read by datasets' JSON reader;
    when that reader fails on values of mixed types, the message names the row and column."""
    rows = json_rows(path)
    try:
        return load_dataset("json", data_files=path, split="train")
    except Exception as err:  # noqa: BLE001 - the reader raises many types; name the file either way
        where = first_type_conflict(rows, path) if isinstance(rows, list) else None
        cause = err.__cause__ or err
        raise DataError(f"{where or path + ': could not read it as JSON rows'} ({type(cause).__name__}: "
                        f"{str(cause)[:300]}).") from err


#: reader of each format (json, jsonl and parquet go through `datasets`' own loaders)
READERS = {
    "hub": _load_hub,
    "squad": lambda path, config: load_squad_json(path),
    "c3": lambda path, config: load_c3_json(path),
    "disk": lambda path, config: load_from_disk(path),
    "json": _load_json_rows,
    "jsonl": _load_json_rows,
    "xlsx": lambda path, config: Dataset.from_pandas(read_frame(path, config), preserve_index=False),
    "csv": lambda path, config: Dataset.from_pandas(read_frame(path), preserve_index=False),
}


def load_source(path: str, fmt: str = "auto", config: str | None = None) -> DatasetDict:
    """Load a data source as a `DatasetDict` (single files become one `train` split)."""
    if not path:
        raise DataError("No data source: set `dataset_path` in the recipe (a hub id, a file or a saved folder).")
    fmt = detect_format(path) if fmt == "auto" else fmt
    files = matched_files(path) if fmt != "hub" else None
    if files:
        return _concatenate(path, {f: load_source(f, fmt, config) for f in files})
    if fmt not in ("hub", "disk") and Path(path).is_file() and Path(path).stat().st_size == 0:
        raise DataError(f"{path}: the file is empty. Point `dataset_path` at a file with rows.")
    reader = READERS.get(fmt)
    loaded = reader(path, config) if reader else _load_with_datasets(path, fmt)
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({"train": loaded})
    if not isinstance(loaded, DatasetDict):
        raise DataError(f"{path}: expected a dataset or dataset dict, got {type(loaded).__name__}.")
    for name, split in loaded.items():
        if len(split) == 0:
            raise DataError(f"{path}: split `{name}` is empty. Check the file holds rows.")
    return loaded


def _concatenate(pattern: str, parts: dict[str, DatasetDict]) -> DatasetDict:
    """One `DatasetDict` from the files of a glob pattern, split by split, in path order."""
    first, *_ = parts
    merged = {}
    for split in parts[first]:
        pieces = []
        for f, data in parts.items():
            if split not in data:
                raise DataError(f"{pattern}: {f} has no split `{split}` but {first} has; give files of one layout.")
            if set(data[split].column_names) != set(parts[first][split].column_names):
                diff = set(data[split].column_names) ^ set(parts[first][split].column_names)
                raise DataError(f"{pattern}: {f} and {first} have different columns ({', '.join(sorted(diff))}); "
                                "give files of one layout.")
            pieces.append(data[split])
        try:
            merged[split] = concatenate_datasets(pieces)
        except ValueError as err:
            raise DataError(f"{pattern}: the files' columns have different types ({err}).") from err
    return DatasetDict(merged)
