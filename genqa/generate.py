"""Predict a test set and write the submission: `python -m genqa.generate --base MODEL --data TEST --out OUT.csv`.

The recipe (task, template, columns, submission format) comes from the run folder (`--adapter RUN_DIR`), the merged
folder (`--base merged/`), or `--recipe`; extra `--key value` arguments override recipe keys (e.g. the test sheet's
`--id_column 題號`). Predictions are appended to `OUT.predictions.jsonl` batch by batch, so a rerun after a kill
continues where it stopped (with the same model and settings only: `fingerprint`); one process writes an `--out` at a
time (`OUT.lock`). The CSV (or, for `OUT.json`, a SQuAD `{id: answer}` map) is written atomically, and
metrics are printed when the test data carries gold answers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genqa.config import MCQ_MODES, flag_at_least
from genqa.errors import report_errors
from genqa.files import unwritable, write_atomic
from genqa.hardware import resolve_autocast
from genqa.locks import output_lock
from genqa.scoring.metrics import LANGS
from genqa.scoring.task_metrics import EVAL_TASKS
from genqa.submission import PredictionStore, SubmissionError, write_json_predictions, write_submission, writes_json

# Data, templates, the recipe parser (TRL) and the run folder are imported where used: `genqa predict --help` loads
# none of them.


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and an option's default after its help where it has one the help does not
    already state."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text.lower():
            return text
        return f"{text} (default: %(default)s)".strip()


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of genqa.generate (unknown `--key value` pairs are recipe overrides)."""
    p = argparse.ArgumentParser(prog="genqa predict", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--base", required=True, help="Merged model folder, a base model, or tiny:llama.")
    p.add_argument("--data", required=True, help="Test data: any source genqa trains from (xlsx, json, SQuAD...).")
    p.add_argument("--out", required=True, help="Submission CSV (or .json for a SQuAD {id: answer} map).")
    p.add_argument("--recipe", help="Recipe YAML (default: the one saved in --adapter or --base).")
    p.add_argument("--adapter", help="A run folder holding a LoRA adapter to apply on --base.")
    p.add_argument("--split", help="Split of --data to predict (default: its only/first split).")
    p.add_argument("--batch_size", type=flag_at_least(1), default=16,
                   help="Prompts per forward pass (does not change answers).")
    p.add_argument("--max_new_tokens", type=flag_at_least(1), help="Default: the recipe's max_new_tokens, else by "
                   "task: mcq 8, extractive 48, abstractive 64, mcq_generation 256.")
    p.add_argument("--mcq_mode", choices=MCQ_MODES, default=None,
                   help="MCQ answering (default: the recipe's mcq_mode, itself `score` by default): score the option "
                   "labels in one forward pass, generate freely and parse the label, or score the options' texts "
                   "(`options`: log-probability per character, `options_sum`: summed).")
    p.add_argument("--num_beams", type=flag_at_least(1), default=1,
                   help="Beam search width of free generation (1: greedy).")
    p.add_argument("--do_sample", action="store_true", help="Sample instead of greedy decoding.")
    p.add_argument("--dtype", default=None, help="float32 / bfloat16 / float16 (default: the recipe's dtype).")
    p.add_argument("--autocast", choices=("none", "bf16", "auto"), default="none",
                   help="Run the forward passes under bf16 autocast (weights stay as loaded): 2-4x faster on CPUs "
                   "with AVX512-BF16 / AMX and on GPUs, about 50x slower on CPUs without bf16 instructions (AVX2). "
                   "`auto`: bf16 only where genqa measured it faster on this machine (`genqa env`).")
    p.add_argument("--fill_missing", help="Answer written for ids without a valid prediction (otherwise refused).")
    p.add_argument("--lang", choices=LANGS, help="Metric normalisation language (default: the "
                   "recipe's metric_lang).")
    p.add_argument("--limit", type=flag_at_least(1), help="Predict only the first N rows (a quick look).")
    p.add_argument("--no_progress", action="store_true", help="No progress bar.")
    p.add_argument("--overwrite", action="store_true", help="Start over: drop the predictions an earlier run left for "
                   "this --out (OUT.predictions.jsonl) instead of resuming them; needed after changing a setting "
                   "that shapes predictions (e.g. --mcq_mode).")
    return p


def resolve_recipe(args: argparse.Namespace, overrides: list[str]):
    """The recipe of this prediction: --recipe, else the one saved with the adapter or the merged base."""
    from genqa.recipe import RecipeError, parse_recipe
    from genqa.run_dir import RECIPE_FILE, load_run

    if args.recipe:
        qa, sft, model_args, _ = parse_recipe([args.recipe, "--use_cpu", "true", *overrides])
        return qa, sft, model_args
    for folder in (args.adapter, args.base):
        if folder and (Path(folder) / RECIPE_FILE).is_file():
            return load_run(folder, ["--use_cpu", "true", *overrides])
    for flag, folder in (("--adapter", args.adapter), ("--base", args.base)):
        if folder and folder.startswith((".", "/", "~")) and not Path(folder).expanduser().exists():
            raise RecipeError(f"{flag} {folder}: no such folder.")
    raise RecipeError(f"no recipe: neither --adapter nor --base ({args.base}) holds {RECIPE_FILE} (a genqa run or "
                      "merged folder does); pass --recipe RECIPE.yaml.")


#: recipe keys that cannot change a prediction: the training data and split, training-time evaluation, metrics and
#: the CSV's column names (the CSV is written anew from the predictions on every run). Every other genqa key (columns,
#: task, prompt, template, backbone, span search) shapes the prompts or the answers read back, so it is fingerprinted.
NOT_IN_PREDICTIONS = {
    "dataset_path", "dataset_config", "train_split", "eval_split", "validation_size", "split_seed",
    "max_train_samples", "max_eval_samples", "generation_eval_samples", "generation_eval_max_new_tokens",
    "metric_lang", "submission_id_column", "submission_answer_column", "dry_run",
}
#: files whose content is the model: merged / full model folders, run folders (adapter), their configs
WEIGHT_FILES = ("model*.safetensors", "pytorch_model*.bin", "adapter_model.safetensors", "adapter_model.bin",
                "config.json", "adapter_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json", "merges.txt",
                   "vocab.txt", "chat_template.jinja", "chat_template.json")
_MIB = 1 << 20


def file_digest(path: Path) -> str:
    """Size, mtime and a SHA-256 of the first and last MiB of a file: cheap on multi-GB weights (two reads), and any
    rewrite (a retrained adapter, a new merge) changes the mtime even when the size stays."""
    import hashlib

    stat = path.stat()
    digest = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}:".encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(_MIB))
        if stat.st_size > 2 * _MIB:
            fh.seek(-_MIB, os.SEEK_END)
        digest.update(fh.read(_MIB))
    return digest.hexdigest()[:16]


def files_digest(folder: str | None, patterns: tuple[str, ...]) -> str | None:
    """One digest over the files of `folder` matching `patterns` (a hub id or a missing folder: its name)."""
    import hashlib

    if not folder:
        return None
    path = Path(folder)
    if path.is_file():
        return file_digest(path)
    files = sorted({f for pattern in patterns for f in path.glob(pattern) if f.is_file()}) if path.is_dir() else []
    if not files:
        return f"name:{folder}"
    return hashlib.sha256("".join(f"{f.name}={file_digest(f)};" for f in files).encode()).hexdigest()[:16]


@dataclass
class Setup:
    """What prediction runs with, worked out once per command: the backbone module, the tokenizer and template
    prompts are built with, and the prediction options (backbone settings included)."""

    backbone: Any
    tokenizer: Any
    template: str
    options: Any  # genqa.backbones.PredictOptions


def prepare(args: argparse.Namespace, qa, sft, task) -> Setup:
    """The backbone, tokenizer, template and options of this prediction (the model itself loads only when rows are
    left to predict)."""
    from genqa.backbones import PredictOptions, get_backbone
    from genqa.backbones.loading import detect_backbone

    backbone = get_backbone(detect_backbone(args.base, qa.backbone, adapter=args.adapter))
    args.mcq_mode = args.mcq_mode or qa.mcq_mode  # the recipe's unless passed; fingerprinted as resolved
    tokenizer, template = _tokenizer_and_template(args, qa, args.template_overridden)
    passed = {a[2:].split("=", 1)[0] for a in args.overrides if a.startswith("--")}
    options = PredictOptions(
        max_length=sft.max_length, batch_size=args.batch_size,
        max_new_tokens=task.answer_budget if args.max_new_tokens is None else args.max_new_tokens,
        num_beams=args.num_beams, do_sample=args.do_sample, mcq_mode=args.mcq_mode, progress=not args.no_progress,
        settings=backbone.prediction_settings([args.adapter, args.base], qa, sft, passed))
    note = generation_budget_note(task, options, [args.adapter, args.base])
    if note:
        print(f"[genqa] note: {note}", file=sys.stderr)
    return Setup(backbone, tokenizer, template, options)


def generation_budget_note(task, options, folders: list[str | None]) -> str | None:
    """`budget_note` where this prediction generates answers (`Task.decoding` mode `generate`); None where it scores
    labels or option texts (`mcq_mode` score / options / options_sum), which generate nothing."""
    if task.decoding(options.settings, options.mcq_mode).mode != "generate":
        return None
    return budget_note(folders, options.max_new_tokens)


def budget_note(folders: list[str | None], budget: int) -> str | None:
    """What a generation budget below the trained answers' length costs, from the training data report saved in the
    run folder (and carried into merged folders); None when the budget covers them or no report says."""
    from genqa.run_dir import REPORT_FILE

    for folder in folders:
        path = Path(folder) / REPORT_FILE if folder else None
        if path is None or not path.is_file():
            continue
        try:
            reports = json.loads(path.read_text(encoding="utf-8"))
            longest = max((int(r.get("longest_answer_tokens") or 0) for r in reports if r.get("split") == "train"),
                          default=0)
        except (OSError, ValueError, TypeError, AttributeError):
            return None  # an unreadable report is not worth failing a prediction over
        if longest > budget:
            return (f"{path}: answers up to {longest} tokens (end token included) were trained, and this prediction "
                    f"generates at most {budget}: longer answers are cut before their end token. Pass "
                    f"--max_new_tokens {longest} (or set `max_new_tokens` in the recipe) to keep them whole.")
        return None
    return None


def fingerprint(args: argparse.Namespace, qa, sft, model_args, setup: Setup) -> dict[str, Any]:
    """What shapes a set of predictions, so that a rerun resumes only onto predictions it would have made itself:
    the weights' content (`file_digest` of the model and adapter files, not their paths), the tokenizer files and
    the template prompts are built with, the prompt-building recipe keys (all genqa keys but `NOT_IN_PREDICTIONS`,
    and `max_length`), the backbone's prediction settings, decoding and precision, and the test data file.
    Training-only keys (`learning_rate`, LoRA rank ...) and `--batch_size` / `--limit` are not in it."""
    import hashlib
    from dataclasses import asdict

    from genqa.backbones.loading import resolve_model_path

    data = Path(args.data)
    prompt = {k: v for k, v in sorted(asdict(qa).items()) if k not in NOT_IN_PREDICTIONS}
    base = resolve_model_path(args.base, args.adapter)
    return {
        **prompt, "max_length": sft.max_length,  # the recipe's `template` is its name: its text is `template_text`
        "base_weights": files_digest(base, WEIGHT_FILES),
        "adapter_weights": files_digest(args.adapter, WEIGHT_FILES),
        "tokenizer": files_digest(resolve_model_path(args.adapter or args.base), TOKENIZER_FILES),
        "template_text": hashlib.sha256((setup.template or "").encode()).hexdigest()[:16],
        "settings": setup.options.settings.to_dict(),
        "mcq_mode": args.mcq_mode, "max_new_tokens": setup.options.max_new_tokens,
        "num_beams": args.num_beams, "do_sample": args.do_sample, "dtype": args.dtype or model_args.dtype,
        "autocast": args.autocast,
        "data": str(data.resolve()) if data.exists() else args.data, "split": args.split,
        "data_bytes": data.stat().st_size if data.is_file() else None,
        "data_mtime": int(data.stat().st_mtime) if data.exists() else None,
    }


def load_model_for(backbone, base: str, adapter: str | None, dtype):
    """The model to predict with: base (merged or not) plus an optional adapter, in eval mode."""
    from genqa.backbones import auto_class
    from genqa.backbones.loading import apply_adapter, resolve_model_path

    model = auto_class(backbone).from_pretrained(resolve_model_path(base, adapter), dtype=dtype)
    if adapter:
        model = apply_adapter(model, adapter, base)
    return model.eval()


def _tokenizer_and_template(args, qa, template_overridden: bool = False):
    from transformers import AutoTokenizer

    from genqa.backbones.loading import ensure_pad_token, resolve_model_path
    from genqa.data.templates import load_template
    from genqa.run_dir import RECIPE_FILE

    folder = args.adapter or args.base
    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(resolve_model_path(folder)))
    tokenizer.padding_side = "left"
    saved_by_genqa = (Path(folder) / RECIPE_FILE).is_file() and tokenizer.chat_template
    if saved_by_genqa and not template_overridden:  # exactly the template the model was trained with
        return tokenizer, tokenizer.chat_template
    return tokenizer, load_template(qa.template, tokenizer)


def predict(args: argparse.Namespace, task, model_args, setup: Setup, rows: list[dict[str, Any]],
            store: PredictionStore) -> None:
    """Predict every row not yet in `store`, appending records batch by batch (a kill loses at most one batch)."""
    import torch

    from genqa.backbones.loading import model_device, torch_dtype

    todo = [r for r in rows if r["id"] not in store]
    if len(todo) < len(rows):
        print(f"[genqa] resuming: {len(rows) - len(todo)} of {len(rows)} rows already predicted in {store.path}")
    if not todo:
        return
    model = load_model_for(setup.backbone, args.base, args.adapter, torch_dtype(args.dtype or model_args.dtype))

    def on_batch(done: list[tuple[int, str]], how: str) -> None:
        records = []
        for i, raw in done:
            answer, how_row = task.read_answer(todo[i], raw, how)
            records.append({"id": todo[i]["id"], "raw": raw, "answer": answer, "how": how_row})
        store.add(records)

    device_type = model_device(model).type
    with (torch.autocast(device_type, dtype=torch.bfloat16) if args.autocast == "bf16" else contextlib.nullcontext()):
        setup.backbone.predict(model, setup.tokenizer, setup.template, task, todo, setup.options, on_batch)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    """Predict, write the submission (or SQuAD JSON) and, when the data carries answers, the metrics; one process per
    `--out` at a time (`OUT.lock`)."""
    from genqa.data.rows import load_rows
    from genqa.data.tasks import get_task

    out = Path(args.out)
    problem = unwritable(out, folder=False)
    if problem:
        raise SubmissionError(f"--out: {problem}; give the path of a submission file to write (e.g. "
                              f"{out / 'submission.csv' if out.is_dir() else 'submission.csv'}).")
    from genqa.backbones.loading import refuse_adapter_as_base

    refuse_adapter_as_base(args.base)
    qa, sft, model_args = resolve_recipe(args, overrides)
    task = get_task(qa)
    rows, renamed = load_rows(task, args.data, args.split, limit=args.limit)
    if renamed and not writes_json(out):
        raise SubmissionError(f"{args.data}: {renamed} repeated ids; a submission needs one row per id. Set "
                              "--id_column to a column with unique ids (or write --out X.json for evaluation).")
    args.overrides = overrides
    args.autocast = resolve_autocast(args.autocast)  # what runs is recorded: `auto` resolved, per machine
    args.template_overridden = any(a.split("=", 1)[0] == "--template" for a in overrides)
    with output_lock(out.with_name(out.name + ".lock"), f"--out {out}", main_only=False):
        setup = prepare(args, qa, sft, task)
        stored = out.with_name(out.name + ".predictions.jsonl")
        if args.overwrite and stored.exists():
            stored.unlink()
            print(f"[genqa] --overwrite: removed {stored}; predicting every row again")
        store = PredictionStore(out.with_name(out.name + ".predictions.jsonl"),
                                fingerprint(args, qa, sft, model_args, setup))
        predict(args, task, model_args, setup, rows, store)
        write_outputs(args, qa, task, rows, store, out)
    return 0


#: how an answer was read back from the model's output (`Task.read_answer`), in words
READ_AS = {"exact": "are exact spans of their context",
           "normalized": "were found in their context after normalisation (case, spacing, punctuation)",
           "not_in_context": "are not in their context (kept as generated)",
           "nearest": "were not in their context and became the span most like them (nearest_span)",
           "no_answer": "are the no-answer text (scored as an empty answer)",
           "span": "are spans the span head picked", "label_score": "are labels picked by scoring the option labels",
           "option_score": "are labels picked by scoring the options' texts",
           "generate": "were generated and parsed", "unparseable": "could not be read as a valid answer"}


def how_lines(how: dict[str, int], total: int) -> list[str]:
    """`20 of 20 answers are exact spans of their context`, one line per way answers were read back."""
    return [f"{n} of {total} answers {READ_AS.get(k, f'were read as {k}')}" for k, n in how.items()]


def next_command(args: argparse.Namespace, task, out: Path) -> str:
    """How to score predictions of an unlabelled test file once its answers are known."""
    if EVAL_TASKS.get(task.name, ("squad",))[0] != "squad":  # scored by its recipe's labels or layout
        from genqa.run_dir import RECIPE_FILE

        recipe = args.recipe or next((str(Path(f) / RECIPE_FILE) for f in (args.adapter, args.base)
                                      if f and (Path(f) / RECIPE_FILE).is_file()), "RECIPE.yaml")
        return (f"submit {out}, or score it against a labelled copy of the test file: genqa eval --task {task.name} "
                f"--recipe {recipe} --data YOUR_GOLD_FILE --predictions {out}")
    return f"submit {out}, or score it: genqa eval --data YOUR_GOLD_FILE.json --predictions {out}"


def write_outputs(args: argparse.Namespace, qa, task, rows: list[dict[str, Any]], store: PredictionStore,
                  out: Path) -> None:
    """The submission CSV (or SQuAD JSON) from the stored predictions, and the metrics when the rows have golds."""
    ids = [r["id"] for r in rows]
    answers = {i: store.records[i]["answer"] for i in ids if i in store.records}
    how = dict(Counter(store.records[i]["how"] for i in ids if i in store.records))
    print(f"[genqa] {len(answers)}/{len(ids)} rows predicted")
    for line in how_lines(how, len(answers)):
        print(f"[genqa] {line}")
    if writes_json(out):
        write_json_predictions(out, ids, answers)
    else:
        stats = write_submission(out, ids, answers, qa.submission_id_column, qa.submission_answer_column,
                                 is_valid=task.is_valid_answer, fill=args.fill_missing)
        if stats["filled"]:
            print(f"[genqa] {stats['filled']} missing/invalid answers filled with {args.fill_missing!r}")
    print(f"[genqa] wrote {out}")
    if not task.has_gold(rows):
        print(f"[genqa] next: {next_command(args, task, out)}")
    if task.has_gold(rows):
        from genqa.scoring.task_metrics import task_metrics

        metrics = task_metrics(task, rows, answers, args.lang or qa.metric_lang)
        metrics["answers_read_as"] = {READ_AS.get(k, k): n for k, n in how.items()}
        write_atomic(out.with_name(out.name + ".metrics.json"), json.dumps(metrics, indent=2, ensure_ascii=False))
        print(json.dumps(metrics, indent=2, ensure_ascii=False))


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m genqa.generate`."""
    args, overrides = build_parser().parse_known_args(argv)
    return report_errors("genqa.generate", lambda: run(args, overrides))


if __name__ == "__main__":
    sys.exit(main())
