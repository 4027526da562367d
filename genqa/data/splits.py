"""The validation split: the recipe's own split, or one made from the training rows, seeded and grouped (by article
or context) so that no group sits on both sides."""

from __future__ import annotations

import random

from datasets import Dataset, DatasetDict

from genqa.errors import DataError


def grouped_split(dataset: Dataset, size: float, seed: int, group_column: str | None) -> tuple[Dataset, Dataset]:
    """Seeded train/validation split; rows sharing `group_column` (e.g. the context) land on the same side."""
    n = len(dataset)
    n_val = int(round(size * n)) if size < 1 else int(size)
    if n_val <= 0 or n_val >= n:
        raise DataError(f"validation_size={size} leaves no rows on one side of a {n}-row split; lower it or set 0.")
    if group_column and group_column in dataset.column_names:
        keys = dataset[group_column]
        groups = sorted(set(keys))
        random.Random(seed).shuffle(groups)
        val_groups: set[str] = set()
        count = 0
        sizes: dict[str, int] = {}
        for k in keys:
            sizes[k] = sizes.get(k, 0) + 1
        for g in groups:
            if count >= n_val or len(val_groups) == len(groups) - 1:
                break
            val_groups.add(g)
            count += sizes[g]
        val_idx = [i for i, k in enumerate(keys) if k in val_groups]
        train_idx = [i for i, k in enumerate(keys) if k not in val_groups]
    else:
        order = list(range(n))
        random.Random(seed).shuffle(order)
        val_idx, train_idx = sorted(order[:n_val]), sorted(order[n_val:])
    return dataset.select(train_idx), dataset.select(val_idx)


def train_validation(
    data: DatasetDict, train_split: str, eval_split: str | None, validation_size: float, seed: int,
    group_column: str | None, source: str = "",
) -> tuple[Dataset, Dataset | None, str]:
    """Pick the train and validation splits, or carve a seeded validation split; returns a note saying which."""
    if train_split not in data:
        raise DataError(f"{source}: no split `{train_split}` (splits: {', '.join(data)}). Set `train_split`.")
    train = data[train_split]
    if eval_split and eval_split in data:
        return train, data[eval_split], f"validation = split `{eval_split}`"
    if eval_split:
        note = f"split `{eval_split}` not in the source; "
    else:
        note = ""
    if validation_size == 0:
        return train, None, note + "no validation split"
    train, val = grouped_split(train, validation_size, seed, group_column)
    how = f"grouped by `{group_column}`" if group_column and group_column in data[train_split].column_names else "rows"
    return train, val, note + f"validation = seeded split of {len(val)} rows ({how}, seed {seed})"
