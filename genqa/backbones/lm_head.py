"""The LM head's input made contiguous while genqa predicts: a frozen model's head otherwise copies its weight per row.

Prediction asks the model for the logits of a few positions only (`logits_to_keep`: generation's prefill, label
scoring, option and no-answer scoring), so the head gets a slice of the hidden states, `[rows, kept, width]`, that is
not contiguous. `torch.matmul` folds such a 3-D input into one matrix product only when the fold needs no copy or when
an operand requires grad; otherwise it runs a batched product with the weight expanded to every row and made
contiguous: a copy of the whole `vocab × width` matrix per row and forward. When nothing requires grad (a merged model
loaded in memory, the frozen base under a LoRA adapter, `requires_grad_(False)`) this dominated: Gemma 3 (262,144 ×
640) scored 16 VNHSGE questions' options in 15.4 s instead of 2.7 s (bf16, 2 threads), and every batch of no-answer
scoring copied the head 16 times. A base loaded plainly (`from_pretrained`: weights require grad) took the fast path,
so the same model was 5.7× slower after `merge_and_unload` in memory than after `genqa merge`. A forward pre-hook on
the output embeddings makes the slice contiguous (rows × kept × width values, not rows × the vocabulary's), for the
duration of the prediction call only; the logits are the same.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "_genqa_contiguous_input"


def _contiguous(module, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:]) if args and hasattr(args[0], "contiguous") else args


def contiguous_head_input(fn: F) -> F:
    """Decorate a prediction function whose first argument is the model: while it runs, the model's output embeddings
    (`get_output_embeddings()`, if any) get contiguous inputs. Nested calls register the hook once; it is removed
    when the outermost call returns, so the model is left as it was given."""

    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        getter = getattr(model, "get_output_embeddings", None)
        head = getter() if callable(getter) else None
        if head is None or getattr(head, _MARK, False):
            return fn(model, *args, **kwargs)
        handle = head.register_forward_pre_hook(_contiguous)
        setattr(head, _MARK, True)
        try:
            return fn(model, *args, **kwargs)
        finally:
            handle.remove()
            delattr(head, _MARK)

    return wrapper  # type: ignore[return-value]
