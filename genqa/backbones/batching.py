"""The one batch loop of prediction: rows in length-sorted batches, padded by the tokenizer, with a progress bar.

Every backbone's predictor runs its rows (or an extractive model's windows) through `length_sorted_batches`, so a
batch wastes little padding, and pads with `pad` (the tokenizer's own `pad`, left for decoder-only prompts, right for
encoders). `run_batches` is the driver for predictors that turn a batch of rows into one text per row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

OnBatch = Callable[[list[tuple[int, str]]], None]


def length_sorted_batches(lengths: Sequence[int], batch_size: int, longest_first: bool = True
                          ) -> Iterator[list[int]]:
    """Indices into `lengths`, sorted by length (longest first by default: an out-of-memory shows at once), in
    batches of `batch_size`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=longest_first)
    for i in range(0, len(order), batch_size):
        yield order[i:i + batch_size]


def pad(tokenizer, features: Sequence[dict[str, list[int]]], side: str) -> dict[str, torch.Tensor]:
    """Pad a batch of encoded features (`input_ids`, and `token_type_ids` etc. when present) with the tokenizer's
    own `pad`, on `side` (left or right), as tensors with an attention mask."""
    return dict(tokenizer.pad(list(features), padding=True, padding_side=side, return_tensors="pt"))


def to_device(inputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors of `inputs` moved to `device` (other values, e.g. a KV cache already there, unchanged)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def run_batches(lengths: Sequence[int], batch_size: int, predict_batch: Callable[[list[int]], list[str]],
                on_batch: OnBatch | None = None, progress: bool = True, desc: str = "predicting") -> list[str]:
    """Feed row indices to `predict_batch` in length-sorted batches; return its texts in row order.

    `on_batch` receives `(row index, text)` pairs after every batch, so a caller can store them as they come (a
    killed run loses at most one batch). The bar shows examples/s.
    """
    outputs: list[str] = [""] * len(lengths)
    with tqdm(total=len(lengths), desc=desc, unit="ex", disable=not progress) as bar:
        for batch in length_sorted_batches(lengths, batch_size):
            results = predict_batch(batch)
            for row_i, text in zip(batch, results, strict=True):
                outputs[row_i] = text
            if on_batch:
                on_batch(list(zip(batch, results, strict=True)))
            bar.update(len(batch))
    return outputs
