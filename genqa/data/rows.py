"""One way from a data source to canonical rows, for training, prediction and scoring alike.

`load_canonical_splits` gives the train and validation rows a run trains on (the recipe's source, splits and
sample limits); `load_rows` gives the rows of one file to predict or to score (test sheets without answers too).
Both read through `genqa.data.sources` and map through the task (`Task.to_canonical`), so a file is understood the
same way at every stage.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from datasets import Dataset

from genqa.config import QAArguments
from genqa.data.sources import load_source
from genqa.data.splits import train_validation
from genqa.data.tasks import Task
from genqa.errors import DataError


def load_canonical_splits(qa: QAArguments, task: Task) -> tuple[Dataset, Dataset | None, str]:
    """Load the recipe's data source, pick/make the validation split, map both onto the task schema."""
    data = load_source(qa.dataset_path, qa.dataset_format, qa.dataset_config)
    train, val, note = train_validation(data, qa.train_split, qa.eval_split, qa.validation_size, qa.split_seed,
                                        split_group_column(qa, data), source=qa.dataset_path)
    if qa.max_train_samples:
        train = train.select(range(min(qa.max_train_samples, len(train))))
    if val is not None and qa.max_eval_samples:
        val = val.select(range(min(qa.max_eval_samples, len(val))))
    train = check_row_sizes(task.to_canonical(train, f"{qa.dataset_path} [{qa.train_split}]"),
                            f"{qa.dataset_path} [{qa.train_split}]")
    if val is not None:
        val = check_row_sizes(task.to_canonical(val, f"{qa.dataset_path} [validation]"),
                              f"{qa.dataset_path} [validation]")
    return train, val, note


#: the most characters one text field of a row may hold (about a 300-page book); beyond it a row is a mistake (a
#: whole file pasted into one cell) and tokenizing it would take minutes before any step
MAX_FIELD_CHARS = 1_000_000


def check_row_sizes(rows: Dataset, where: str) -> Dataset:
    """`rows`, or a `DataError` naming the first row whose text field is over `MAX_FIELD_CHARS` (measured in Arrow,
    without reading the rows into Python)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = rows.with_format("arrow")[:] if len(rows) else None
    for name in table.column_names if table is not None else []:
        column = table.column(name)
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            continue
        lengths = pc.fill_null(pc.utf8_length(column), 0)
        longest = pc.max(lengths).as_py() or 0
        if longest > MAX_FIELD_CHARS:
            index = pc.index(lengths, longest).as_py()
            row_id = table.column("id")[index].as_py() if "id" in table.column_names else index
            raise DataError(f"{where}: row {index + 1} (id {row_id}): its {name} holds {longest:,} characters, over "
                            f"the {MAX_FIELD_CHARS:,} one row may hold (a whole file in one cell?). Shorten or remove "
                            "that row.")
    return rows


ARTICLE_COLUMN = "title"  # the article a SQuAD-layout row comes from (genqa.data.sources.iter_squad_rows)


def split_group_column(qa: QAArguments, data) -> str | None:
    """The column the seeded validation split groups by (`split_by`): the context, the article, or none."""
    if qa.split_by == "row":
        return None
    if qa.split_by == "context":
        return qa.context_column
    split = data[qa.train_split] if qa.train_split in data else next(iter(data.values()))
    if ARTICLE_COLUMN not in split.column_names:
        raise DataError(f"{qa.dataset_path}: split_by: article needs a SQuAD-layout source (articles with a "
                        f"`{ARTICLE_COLUMN}`); this source has columns {', '.join(split.column_names)}. Use "
                        "split_by: context.")
    return ARTICLE_COLUMN


def load_rows(task: Task, data: str, split: str | None = None, require_answer: bool = False,
              limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """Canonical rows of one split of `data` (default: `test` if present, else the first) and how many repeated ids
    were renamed `id#2`, `id#3`, ... With `require_answer`, every row must carry its gold answer."""
    source = load_source(data)
    name = split or ("test" if "test" in source else next(iter(source)))
    if name not in source:
        raise DataError(f"{data}: no split `{name}` (splits: {', '.join(source)}).")
    ds = source[name]
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    rows = check_row_sizes(task.to_canonical(ds, f"{data} [{name}]", require_answer=require_answer),
                           f"{data} [{name}]").to_list()
    ids, renamed = unique_ids([r["id"] for r in rows])
    if renamed:
        print(f"[genqa] warning: {renamed} repeated ids in {data}; later copies are renamed id#2, id#3, ...",
              file=sys.stderr)
    for row, uid in zip(rows, ids, strict=True):
        row["id"] = uid
    return rows, renamed


def unique_ids(ids: Sequence[str]) -> tuple[list[str], int]:
    """Make repeated ids unique (`id`, `id#2`, `id#3`, skipping any name another row already has, so `a, a, a#2`
    becomes `a, a#3, a#2`); returns (ids, how many renamed). Prediction and scoring both match ids this way."""
    taken = set(ids)
    seen: dict[str, int] = {}
    out = []
    renamed = 0
    for i in ids:
        if i not in seen:
            seen[i] = 1
            out.append(i)
            continue
        renamed += 1
        n = seen[i] + 1
        while f"{i}#{n}" in taken:
            n += 1
        seen[i] = n
        taken.add(f"{i}#{n}")
        out.append(f"{i}#{n}")
    return out, renamed
