"""Extractive (span) QA on encoders — BERT, XLM-R, MiniLM: sliding windows, labels, n-best decoding, batched scoring.

Pure logic, no training loop (`genqa.backbones.extractive` has that):

- `prepare_train_features` / `prepare_eval_features`: batched `datasets.map` functions that cut (question, context)
  pairs into overlapping windows (`doc_stride` tokens of overlap) and, for training, turn the answer's character
  offsets into start/end token positions. A window that does not hold the whole answer, and an unanswerable question,
  point at the CLS token.
- `postprocess_predictions`: n-best start/end search over all windows of an example, with the SQuAD 2.0 null-score
  rule; answers are exact substrings of the original context.
- `predict_extractive`: batched, length-sorted window scoring of canonical rows; what `genqa.generate` calls for
  extractive backbones.

Windows are always padded on the right, whatever the tokenizer's `padding_side`: BERT-style absolute position
embeddings do not skip left padding, so left-padded windows would shift every position.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from genqa.config import QAArguments

#: span-search defaults are the recipe's (`QAArguments`)
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(QAArguments)}
#: a `doc_stride` of None means min(DOC_STRIDE_CAP, max_length // 3)
DOC_STRIDE_CAP = 128


def default_doc_stride(max_length: int) -> int:
    """`doc_stride` when the recipe sets none: 128 for 384-token windows, a third of shorter windows."""
    return min(DOC_STRIDE_CAP, int(max_length) // 3)


# ---- windows -------------------------------------------------------------------------------------------------------
def check_window(tokenizer, max_length: int, doc_stride: int) -> int:
    """Validate max_length / doc_stride; return the longest question (in tokens) a window keeps."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is a slow tokenizer; extractive QA needs a fast (Rust) tokenizer "
                         "for character offsets. Install `tokenizers` and use the model's fast tokenizer.")
    if max_length is None or max_length <= 0:
        raise ValueError(f"max_length must be a positive number of tokens, got {max_length}.")
    if doc_stride is None or doc_stride < 0:
        raise ValueError(f"doc_stride must be >= 0, got {doc_stride}.")
    n_special = tokenizer.num_special_tokens_to_add(pair=True)
    free = max_length - n_special - doc_stride
    if free < 2:
        raise ValueError(f"doc_stride={doc_stride} leaves no room in a max_length={max_length} window ({n_special} "
                         "special tokens, a question and new context tokens must fit); lower doc_stride (e.g. "
                         "max_length 384 with doc_stride 128).")
    return free // 2


def _fit_questions(questions: Sequence[str], tokenizer, max_question_tokens: int) -> list[str]:
    """Strip leading blanks and cut questions longer than `max_question_tokens` at a token boundary.

    A question must leave more than `doc_stride` context tokens in every window, or the windows cannot advance.
    """
    questions = [(q or "").lstrip() for q in questions]
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for q, ids, offsets in zip(questions, enc["input_ids"], enc["offset_mapping"], strict=True):
        out.append(q if len(ids) <= max_question_tokens else q[:offsets[max_question_tokens - 1][1]])
    return out


def _encode(examples: Mapping[str, Sequence], tokenizer, max_length: int, doc_stride: int, padding: str | bool):
    max_q = check_window(tokenizer, max_length, doc_stride)
    for col in ("question", "context"):
        if col not in examples:
            raise KeyError(f"extractive features need a `{col}` column; got {', '.join(examples)}.")
    questions = _fit_questions(examples["question"], tokenizer, max_q)
    return tokenizer(questions, [c or "" for c in examples["context"]], truncation="only_second",
                     max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                     return_offsets_mapping=True, padding=padding, padding_side="right")


def cls_index(input_ids: Sequence[int], tokenizer) -> int:
    """Position of the CLS token (`<s>` for XLM-R); the first non-padding token when there is none."""
    cls_id = tokenizer.cls_token_id
    if cls_id is not None:
        try:
            return list(input_ids).index(cls_id)
        except ValueError:
            pass
    pad_id = tokenizer.pad_token_id
    return next((i for i, t in enumerate(input_ids) if t != pad_id), 0)


def _trim_span(context: str, start: int, end: int) -> tuple[int, int]:
    """Shrink [start, end) past surrounding whitespace and trailing combining marks (NFD diacritics)."""
    while start < end and context[start].isspace():
        start += 1
    while end > start and (context[end - 1].isspace() or unicodedata.combining(context[end - 1])):
        end -= 1
    return start, end


def _extend_span(context: str, start: int, end: int) -> tuple[int, int]:
    """Trim [start, end) of whitespace, then take in combining marks that follow it (tokens may drop them)."""
    start, end = _trim_span(context, start, end)
    while start < end < len(context) and unicodedata.combining(context[end]):
        end += 1
    return start, end


def answer_token_span(offsets: Sequence[Sequence[int] | None], sequence_ids: Sequence[int | None], start_char: int,
                      end_char: int) -> tuple[int, int] | None:
    """(start, end) token positions of the context span [start_char, end_char) in one window, or None.

    None when the window does not hold the whole answer. Tokens are matched by overlap, so offsets that include a
    leading space (SentencePiece `▁`) or end before a combining mark still match.
    """
    ctx = [i for i, s in enumerate(sequence_ids) if s == 1 and offsets[i] is not None
           and offsets[i][1] > offsets[i][0]]
    if not ctx or end_char <= start_char:
        return None
    if offsets[ctx[0]][0] > start_char or offsets[ctx[-1]][1] < end_char:
        return None
    start_tok = next((i for i in ctx if offsets[i][1] > start_char), None)
    end_tok = next((i for i in reversed(ctx) if offsets[i][0] < end_char), None)
    if start_tok is None or end_tok is None or end_tok < start_tok:
        return None
    return start_tok, end_tok


def prepare_train_features(examples: dict[str, list], tokenizer, max_length: int, doc_stride: int,
                           padding: str | bool = "max_length", keep_sample_mapping: bool = False) -> dict:
    """Batched `datasets.map` function: canonical rows → training windows with `start_positions` / `end_positions`.

    Question first, context second (`truncation="only_second"`), windows overlapping by `doc_stride` tokens, padded
    on the right to `max_length`. The first gold answer (`answers[0]` at `answer_starts[0]`) is the label; windows
    that do not hold it whole, and unanswerable rows (`answers == []`), point at the CLS token. With
    `keep_sample_mapping`, `overflow_to_sample_mapping` (row of the batch each window comes from) is kept too.
    """
    enc = _encode(examples, tokenizer, max_length, doc_stride, padding)
    sample_map = enc.pop("overflow_to_sample_mapping")
    offsets_all = enc.pop("offset_mapping")
    answers_col = examples.get("answers")
    starts_col = examples.get("answer_starts")
    start_positions, end_positions = [], []
    for i, offsets in enumerate(offsets_all):
        cls = cls_index(enc["input_ids"][i], tokenizer)
        row = sample_map[i]
        answers = answers_col[row] if answers_col is not None else []
        span = None
        if answers:
            starts = starts_col[row] if starts_col is not None else []
            if not starts or starts[0] is None or starts[0] < 0:
                rid = examples["id"][row] if "id" in examples else row
                raise ValueError(f"row {rid}: answer {answers[0]!r} has no "
                                 "character offset (`answer_starts`); map rows with genqa.data.tasks first.")
            context = examples["context"][row]
            start_char, end_char = _trim_span(context, starts[0], starts[0] + len(answers[0]))
            span = answer_token_span(offsets, enc.sequence_ids(i), start_char, end_char)
        start_positions.append(span[0] if span else cls)
        end_positions.append(span[1] if span else cls)
    out = dict(enc)
    out["start_positions"] = start_positions
    out["end_positions"] = end_positions
    if keep_sample_mapping:
        out["overflow_to_sample_mapping"] = list(sample_map)
    return out


def prepare_eval_features(examples: dict[str, list], tokenizer, max_length: int, doc_stride: int,
                          padding: str | bool = "max_length") -> dict:
    """Batched `datasets.map` function: rows → scoring windows with `example_id`, `offset_mapping` and `cls_index`.

    `offset_mapping` keeps the character offsets of context tokens only (None elsewhere), so decoding can never
    pick a question or special token. `example_id` is the row's `id` (its position in the batch when there is none).
    """
    enc = _encode(examples, tokenizer, max_length, doc_stride, padding)
    sample_map = enc.pop("overflow_to_sample_mapping")
    offsets_all = enc.pop("offset_mapping")
    ids = examples.get("id")
    example_ids, offset_mapping, cls_positions = [], [], []
    for i, offsets in enumerate(offsets_all):
        seq = enc.sequence_ids(i)
        row = sample_map[i]
        example_ids.append(str(ids[row]) if ids is not None else str(row))
        offset_mapping.append([tuple(o) if s == 1 else None for o, s in zip(offsets, seq, strict=True)])
        cls_positions.append(cls_index(enc["input_ids"][i], tokenizer))
    out = dict(enc)
    out["example_id"] = example_ids
    out["offset_mapping"] = offset_mapping
    out["cls_index"] = cls_positions
    return out


# ---- decoding ------------------------------------------------------------------------------------------------------
def postprocess_predictions(examples, features, start_logits, end_logits,
                            n_best_size: int = _DEFAULTS["n_best_size"],
                            max_answer_length: int = _DEFAULTS["max_answer_length"],
                            null_score_diff_threshold: float = _DEFAULTS["null_score_diff_threshold"],
                            version_2_with_negative: bool = True) -> dict[str, str]:
    """Answer text per example id: the best span over all windows of the example, or "" for no answer.

    `examples` has `id` and `context` columns (a `Dataset` or a dict of lists); `features` has `example_id`,
    `offset_mapping` and optionally `cls_index` (from `prepare_eval_features`); `start_logits` / `end_logits` hold
    one row per feature (a 2-D array, or 1-D arrays of any length). Candidates are the `n_best_size` top starts ×
    top ends of each window with `start <= end`, at most `max_answer_length` tokens, both inside the context. With
    `version_2_with_negative`, "" is returned when the smallest CLS score (start + end logit at CLS) over the
    windows beats the best span by more than `null_score_diff_threshold`. Answers are
    `context[start_char:end_char]` of the original context (trimmed of blanks), never re-joined tokens.
    """
    if n_best_size < 1 or max_answer_length < 1:
        raise ValueError(f"n_best_size ({n_best_size}) and max_answer_length ({max_answer_length}) must be >= 1.")
    feature_ids = list(features["example_id"])
    offsets_all = list(features["offset_mapping"])
    cls_all = list(features["cls_index"]) if _has(features, "cls_index") else [0] * len(feature_ids)
    if not (len(start_logits) == len(end_logits) == len(feature_ids)):
        raise ValueError(f"{len(feature_ids)} features but {len(start_logits)} start and {len(end_logits)} end logit "
                         "rows.")
    by_example: dict[str, list[int]] = defaultdict(list)
    for i, ex_id in enumerate(feature_ids):
        by_example[str(ex_id)].append(i)
    predictions: dict[str, str] = {}
    for ex_id, context in zip(examples["id"], examples["context"], strict=True):
        ex_id = str(ex_id)
        best: tuple[float, int, int] | None = None
        min_null: float | None = None
        for fi in by_example.get(ex_id, []):
            starts = np.asarray(start_logits[fi], dtype=np.float32)
            ends = np.asarray(end_logits[fi], dtype=np.float32)
            cls = int(cls_all[fi])
            if cls < min(len(offsets_all[fi]), len(starts), len(ends)):
                null = float(starts[cls] + ends[cls])
                min_null = null if min_null is None else min(min_null, null)
            best = _best_span(context, offsets_all[fi], starts, ends, n_best_size, max_answer_length, best)
        if best is None:
            predictions[ex_id] = ""
        elif version_2_with_negative and min_null is not None and min_null - best[0] > null_score_diff_threshold:
            predictions[ex_id] = ""
        else:
            predictions[ex_id] = context[best[1]:best[2]]
    return predictions


def _best_span(context: str, offsets, starts: np.ndarray, ends: np.ndarray, n_best_size: int,
               max_answer_length: int, best: tuple[float, int, int] | None) -> tuple[float, int, int] | None:
    """The best (score, start char, end char) of one window's top starts x top ends, or `best` if none beats it."""
    n = min(len(offsets), len(starts), len(ends))
    top_s = np.argsort(starts[:n])[::-1][:n_best_size]
    top_e = np.argsort(ends[:n])[::-1][:n_best_size]
    for s in top_s:
        if offsets[s] is None:
            continue
        for e in top_e:
            if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                continue
            score = float(starts[s] + ends[e])
            if best is not None and score <= best[0]:
                continue
            a, b = _extend_span(context, int(offsets[s][0]), int(offsets[e][1]))
            if b > a:
                best = (score, a, b)
    return best


def _has(obj: Any, key: str) -> bool:
    names = getattr(obj, "column_names", None)
    return key in names if names is not None else key in obj


# ---- batched scoring -----------------------------------------------------------------------------------------------
AUTOCAST_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16"}


def predict_extractive(model, tokenizer, rows, max_length: int, doc_stride: int | None = None,
                       batch_size: int = 32, autocast_dtype=None, **postprocess_kwargs: Any) -> list[str]:
    """Answers of a QA model for canonical `rows` (`context`, `question` columns), in row order; "" = no answer.

    All windows of all rows are scored in length-sorted batches of `batch_size`, padded per batch on the right (no
    padding to `max_length`), under `torch.inference_mode()`; `doc_stride` defaults to `default_doc_stride`;
    `postprocess_kwargs` go to `postprocess_predictions` (`n_best_size`, `max_answer_length`,
    `null_score_diff_threshold`, `version_2_with_negative`). With `autocast_dtype` ("bf16", "fp16" or a torch
    dtype) the forward passes run under `torch.autocast` on the model's device. The model's train/eval mode is
    restored.
    """
    import contextlib

    import torch

    from genqa.backbones.batching import length_sorted_batches, pad
    from genqa.backbones.loading import model_device

    if isinstance(autocast_dtype, str):
        if autocast_dtype not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast_dtype: use one of {', '.join(AUTOCAST_DTYPES)} or None, "
                             f"got {autocast_dtype!r}.")
        autocast_dtype = getattr(torch, AUTOCAST_DTYPES[autocast_dtype])
    for col in ("context", "question"):
        if not _has(rows, col):
            raise KeyError(f"predict_extractive: rows need a `{col}` column (canonical rows, see genqa.data.tasks).")
    n_rows = len(rows["context"])
    if n_rows == 0:
        return []
    doc_stride = default_doc_stride(max_length) if doc_stride is None else doc_stride
    ids = [str(i) for i in range(n_rows)]
    examples = {"id": ids, "context": list(rows["context"]), "question": list(rows["question"])}
    feats = prepare_eval_features(examples, tokenizer, max_length, doc_stride, padding=False)
    names = [k for k in tokenizer.model_input_names if k in feats]
    lengths = [len(x) for x in feats["input_ids"]]
    device = model_device(model)
    start_all: list[np.ndarray | None] = [None] * len(lengths)
    end_all: list[np.ndarray | None] = [None] * len(lengths)
    was_training = model.training
    model.eval()
    amp = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    try:
        with torch.inference_mode(), amp:
            for idx in length_sorted_batches(lengths, batch_size, longest_first=False):
                batch = pad(tokenizer, [{k: feats[k][i] for k in names} for i in idx], side="right")
                out = model(**{k: v.to(device) for k, v in batch.items() if k in names})
                s = out.start_logits.float().cpu().numpy()
                e = out.end_logits.float().cpu().numpy()
                for j, i in enumerate(idx):
                    start_all[i] = s[j, :lengths[i]]
                    end_all[i] = e[j, :lengths[i]]
    finally:
        model.train(was_training)
    preds = postprocess_predictions(examples, feats, start_all, end_all, **postprocess_kwargs)
    return [preds[i] for i in ids]


# ---- reports -------------------------------------------------------------------------------------------------------
@dataclass
class WindowReport:
    """How one split was cut into windows: rows, windows, rows split over several windows, lost answers."""

    split: str
    rows: int
    windows: int
    overflowing_rows: int
    answerable_rows: int
    unanswerable_rows: int
    answer_windows: int
    lost_answer_rows: int
    max_length: int
    doc_stride: int

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-serialisable dict."""
        return {"kind": "extractive_windows", **asdict(self)}

    def summary(self) -> str:
        """One human-readable line."""
        lost = (f"; {self.lost_answer_rows} answerable rows have no window holding the whole answer (trained as "
                "no-answer; raise max_length)" if self.lost_answer_rows else "")
        return (f"[genqa] {self.split}: {self.rows} rows -> {self.windows} windows of {self.max_length} tokens "
                f"(doc_stride {self.doc_stride}); {self.overflowing_rows} rows span several windows; "
                f"{self.answerable_rows} answerable, {self.unanswerable_rows} unanswerable; {self.answer_windows} "
                f"windows hold an answer{lost}")


def window_report(split: str, rows, row_index: Sequence[int], start_positions: Sequence[int],
                  cls_positions: Sequence[int], max_length: int, doc_stride: int) -> WindowReport:
    """Build a `WindowReport` from canonical rows and, per window, its row, start label and CLS position."""
    windows_per_row = np.bincount(np.asarray(row_index, dtype=np.int64), minlength=len(rows)) if len(rows) else []
    answerable = [bool(a) for a in rows["answers"]]
    labelled = set()
    answer_windows = 0
    for r, s, c in zip(row_index, start_positions, cls_positions, strict=True):
        if s != c:
            answer_windows += 1
            labelled.add(int(r))
    n_ans = sum(answerable)
    return WindowReport(split=split, rows=len(rows), windows=len(row_index),
                        overflowing_rows=int(sum(1 for w in windows_per_row if w > 1)), answerable_rows=n_ans,
                        unanswerable_rows=len(rows) - n_ans, answer_windows=answer_windows,
                        lost_answer_rows=sum(1 for i, a in enumerate(answerable) if a and i not in labelled),
                        max_length=max_length, doc_stride=doc_stride)
