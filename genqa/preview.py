"""See what the model sees: `genqa preview RECIPE [-n 3] [--split validation] [--key value ...]`.

Loads the recipe's tokenizer and data only (no model) and, for the first N rows of a split, prints the tokens exactly
as training encodes them (the backbone's own encoder: `PromptEncoder` for causal LMs, `Seq2SeqEncoder` for T5), with
the trained tokens marked -- green on a terminal, `[[...]]` otherwise -- and the inference prompt that
`genqa predict` sends for that row. Then, over the split, token-length percentiles (before any cut) and how many rows
`max_length` truncates (context cut) or drops. This is the view that catches "every label is -100", a missing end
token or a prompt cut in the wrong place before hours of training.

Extractive encoders (span heads) train on windows and start/end positions, not on marked tokens: preview covers the
generative backbones; `genqa train --dry_run` validates an extractive recipe.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any

from genqa.config import flag_at_least
from genqa.errors import GenqaError, report_errors
from genqa.messages import quiet_known_noise

GREEN, DIM, RESET = "\033[1;32m", "\033[2m", "\033[0m"
PERCENTILES = (50, 90, 95, 99)


class PreviewError(GenqaError, ValueError):
    """A preview that cannot be shown (no such split, a backbone preview does not cover)."""


@dataclass
class RowPreview:
    """One row as training encodes it: ids, labels (-100 = masked), status, and the prediction prompt's ids."""

    input_ids: list[int]
    labels: list[int]
    status: str
    prompt_ids: list[int]
    #: seq2seq: the labels are a separate target, not positions of input_ids
    separate_target: bool = False

    def trained(self) -> list[bool]:
        """Per position of `labels` (= of `input_ids` for a causal LM; of the target for seq2seq): trained?"""
        return [x != -100 for x in self.labels]


def build_parser() -> argparse.ArgumentParser:
    """Options of `genqa preview` (other `--key value` pairs override recipe keys, as for `genqa train`)."""
    p = argparse.ArgumentParser(prog="genqa preview", description=__doc__.split("\n\n")[0],
                                epilog="Any recipe key can be overridden: --max_length 256 --template chatml ...")
    p.add_argument("recipe", metavar="RECIPE", help="the YAML recipe, as for genqa train")
    p.add_argument("-n", "--rows", type=flag_at_least(1), default=3, help="rows shown (default 3)")
    p.add_argument("--split", default="train", choices=("train", "validation"), help="split shown (default train)")
    p.add_argument("--stats_rows", type=flag_at_least(0), default=2000,
                   help="rows the length statistics cover (default 2000; 0 = the whole split)")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="mark trained tokens in colour (auto: on a terminal) or with [[...]] brackets")
    return p


def encoder_for(backbone: str, qa, sft, tokenizer, template: str, task):
    """The encoder the backbone trains with (its `encoder`), when it is a prompt encoder preview can show."""
    from genqa.backbones import get_backbone
    from genqa.data.encoding import PromptEncoder

    encoder = get_backbone(backbone).encoder(qa, sft, tokenizer, template, task)
    if not isinstance(encoder, PromptEncoder):
        raise PreviewError(f"backbone {backbone}: preview shows backbones that train on prompts and answers; this one "
                           f"trains on {type(encoder).__name__} rows. Use `genqa train RECIPE --dry_run`.")
    return encoder


def prediction_prompt(encoder, row: dict[str, Any]) -> list[int]:
    """The prompt ids `genqa predict` sends for `row` with the recipe's decoding (label scoring keeps 8 tokens of
    room, option-text scoring its longest option, generation the task's answer budget)."""
    from genqa.backbones import PredictSettings
    from genqa.backbones.generation import encode_prompts, prompt_room

    task = encoder.task
    if hasattr(encoder, "target_ids"):  # seq2seq: the answer does not share the input's budget
        return encoder.encode_prompt(row)[0]
    return encode_prompts(encoder, [row], prompt_room(encoder, task.decoding(PredictSettings()), row,
                                                       task.answer_budget))[0]


def preview_row(encoder, row: dict[str, Any]) -> RowPreview:
    """Encode one canonical row exactly as training does, plus its prediction prompt."""
    enc = encoder.encode(row)
    return RowPreview(list(enc["input_ids"]), list(enc["labels"]), enc["status"], prediction_prompt(encoder, row),
                      separate_target=hasattr(encoder, "target_ids"))


def runs(ids: list[int], trained: list[bool]) -> list[tuple[list[int], bool]]:
    """Consecutive tokens grouped by whether they are trained."""
    out: list[tuple[list[int], bool]] = []
    for tok, flag in zip(ids, trained, strict=True):
        if out and out[-1][1] == flag:
            out[-1][0].append(tok)
        else:
            out.append(([tok], flag))
    return out


def marked(tokenizer, ids: list[int], trained: list[bool], color: bool) -> str:
    """The text of `ids` with trained runs in green (colour) or between `[[` and `]]`."""
    parts = []
    for group, flag in runs(ids, trained):
        text = tokenizer.decode(group, skip_special_tokens=False)
        if color:
            parts.append(f"{GREEN if flag else DIM}{text}{RESET}")
        else:
            parts.append(f"[[{text}]]" if flag else text)
    return "".join(parts)


def show_row(i: int, row: dict[str, Any], view: RowPreview, encoder, color: bool) -> str:
    """The printed block of one row."""
    tok = encoder.tokenizer
    trained = view.trained()
    lines = [f"==== row {i} (id {row['id']}): {view.status}, {len(view.input_ids)} input tokens, "
             f"{sum(trained)} trained ===="]
    if not view.input_ids:
        lines.append("  dropped: the row does not fit max_length even with the context cut (never trained on).")
    elif view.separate_target:
        lines += ["-- encoder input (not trained):", tok.decode(view.input_ids, skip_special_tokens=False),
                  "-- target (trained):", marked(tok, view.labels, trained, color)]
    else:
        lines += ["-- training tokens (trained marked):", marked(tok, view.input_ids, trained, color)]
        if not any(trained):
            lines.append("  WARNING: every label is -100: this row teaches nothing.")
        end = encoder.end_ids
        tail = [t for t, f in zip(view.input_ids, trained, strict=True) if f][-len(end):] if end else []
        if end and tail != end:
            lines.append(f"  WARNING: the trained tokens do not end with {encoder.end_text.strip()!r}: the model "
                         "will not learn to stop.")
    lines += ["-- prediction prompt (genqa predict):", tok.decode(view.prompt_ids, skip_special_tokens=False), ""]
    return "\n".join(lines)


def length_stats(encoder, rows, limit: int) -> str:
    """Token-length percentiles before any cut, and what `max_length` does to the rows."""
    import copy
    from collections import Counter

    import numpy as np

    from genqa.data.encoding import CONTEXT_TRUNCATED, OK

    total = len(rows)
    n = total if limit <= 0 else min(limit, total)
    rows = rows.select(range(n))
    uncut = copy.copy(encoder)
    uncut.max_length = None  # the same encoder with no length limit: each row's full length
    lengths = np.array([len(uncut.encode(r)["input_ids"]) for r in rows] or [0])
    counts = Counter(encoder.encode(r)["status"] for r in rows)
    pcts = ", ".join(f"p{p} {int(np.percentile(lengths, p))}" for p in PERCENTILES)
    dropped = ", ".join(f"{v} {k}" for k, v in counts.items() if k not in (OK, CONTEXT_TRUNCATED)) or "none"
    return "\n".join([
        f"==== lengths over {n} of {total} rows" + (f" (--stats_rows {limit})" if n < total else "") + " ====",
        f"tokens per row before any cut: {pcts}, max {int(lengths.max())}",
        f"max_length {encoder.max_length}: {counts[OK] + counts[CONTEXT_TRUNCATED]} kept, "
        f"{counts[CONTEXT_TRUNCATED]} with the context cut; dropped: {dropped}"])


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    """Load tokenizer and data, print the rows and the statistics."""
    from genqa.backbones.loading import detect_backbone, load_tokenizer
    from genqa.data.rows import load_canonical_splits
    from genqa.data.tasks import get_task
    from genqa.data.templates import load_template
    from genqa.recipe import parse_recipe

    qa, sft, model_args, _ = parse_recipe([args.recipe, "--use_cpu", "true", *overrides])
    backbone = detect_backbone(model_args.model_name_or_path, qa.backbone)
    tokenizer = load_tokenizer(model_args)
    template = load_template(qa.template, tokenizer)
    task = get_task(qa)
    encoder = encoder_for(backbone, qa, sft, tokenizer, template, task)
    train_rows, eval_rows, note = load_canonical_splits(qa, task)
    rows = train_rows if args.split == "train" else eval_rows
    if rows is None or not len(rows):
        raise PreviewError(f"{args.recipe}: no {args.split} rows ({note}).")
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty() and "NO_COLOR" not in os.environ)
    print(f"[genqa] {args.recipe}: {backbone}, template {qa.template}, max_length {sft.max_length}; "
          f"{args.split}: {len(rows)} rows; trained tokens {'in green' if color else 'between [[ ]]'}\n")
    for warning in task.recipe_warnings():
        print(f"[genqa] warning: {args.recipe}: {warning}", file=sys.stderr)
    for i in range(min(args.rows, len(rows))):
        print(show_row(i, rows[i], preview_row(encoder, rows[i]), encoder, color))
    print(length_stats(encoder, rows, args.stats_rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `genqa preview` / `python -m genqa.preview`."""
    args, overrides = build_parser().parse_known_args(argv)
    quiet_known_noise()
    return report_errors("genqa.preview", lambda: run(args, overrides))


if __name__ == "__main__":
    sys.exit(main())
