"""Predict a test set and write the submission: `python -m genqa.generate --base MODEL --data TEST --out OUT.csv`.

The recipe (task, template, columns, submission format) comes from the run folder (`--adapter RUN_DIR`), the merged
folder (`--base merged/`), or `--recipe`; extra `--key value` arguments override recipe keys (e.g. the test sheet's
`--id_column 題號`). Predictions are appended to `OUT.predictions.jsonl` as they are made, so a rerun after a kill
continues where it stopped. The CSV (or, for `OUT.json`, a SQuAD `{id: answer}` map) is written atomically, and
metrics are printed when the test data carries gold answers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from genqa.data_sources import DataError, load_source
from genqa.errors import GenqaError
from genqa.files import write_atomic
from genqa.metrics import LANGS, unique_ids
from genqa.recipe import RecipeError, parse_recipe
from genqa.run_dir import RECIPE_FILE, load_run
from genqa.submission import PredictionStore, SubmissionError, write_json_predictions, write_submission
from genqa.tasks import get_task
from genqa.templates import load_template

DEFAULT_MAX_NEW_TOKENS = {"mcq": 8, "extractive": 48, "abstractive": 64, "mcq_generation": 256}


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of genqa.generate (unknown `--key value` pairs are recipe overrides)."""
    p = argparse.ArgumentParser(prog="python -m genqa.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="Merged model folder, a base model, or tiny:llama.")
    p.add_argument("--data", required=True, help="Test data: any source genqa trains from (xlsx, json, SQuAD...).")
    p.add_argument("--out", required=True, help="Submission CSV (or .json for a SQuAD {id: answer} map).")
    p.add_argument("--recipe", help="Recipe YAML (default: the one saved in --adapter or --base).")
    p.add_argument("--adapter", help="A run folder holding a LoRA adapter to apply on --base.")
    p.add_argument("--split", help="Split of --data to predict (default: its only/first split).")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_new_tokens", type=int, help="Default by task: mcq 8, extractive 48, abstractive 64, "
                   "mcq_generation 256.")
    p.add_argument("--mcq_mode", choices=("score", "generate"), default="score",
                   help="MCQ answering: score the option labels in one forward pass (default), or generate freely "
                   "and parse the label.")
    p.add_argument("--num_beams", type=int, default=1)
    p.add_argument("--do_sample", action="store_true", help="Sample instead of greedy decoding.")
    p.add_argument("--dtype", default=None, help="float32 / bfloat16 / float16 (default: the recipe's dtype).")
    p.add_argument("--autocast", choices=("none", "bf16"), default="none",
                   help="Run the forward passes under bf16 autocast (weights stay as loaded): 2-4x faster on CPUs "
                   "with AVX512-BF16 / AMX and on GPUs, at a small cost in agreement with fp32.")
    p.add_argument("--fill_missing", help="Answer written for ids without a valid prediction (otherwise refused).")
    p.add_argument("--lang", choices=LANGS, help="Metric normalisation language (default: the "
                   "recipe's metric_lang).")
    p.add_argument("--limit", type=int, help="Predict only the first N rows (a quick look).")
    p.add_argument("--no_progress", action="store_true", help="No progress bar.")
    return p


def resolve_recipe(args: argparse.Namespace, overrides: list[str]):
    """The recipe of this prediction: --recipe, else the one saved with the adapter or the merged base."""
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


def load_test_rows(qa, task, data: str, split: str | None,
                   limit: int | None) -> tuple[list[dict[str, Any]], int]:
    """Canonical test rows (answers optional: unlabelled rows have none) and how many repeated ids were renamed
    `id#2`, `id#3`, ..."""
    source = load_source(data)
    name = split or ("test" if "test" in source else next(iter(source)))
    if name not in source:
        raise DataError(f"{data}: no split `{name}` (splits: {', '.join(source)}).")
    ds = source[name]
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    rows = task.to_canonical(ds, f"{data} [{name}]", require_answer=False).to_list()
    ids, renamed = unique_ids([r["id"] for r in rows])
    if renamed:
        print(f"[genqa] warning: {renamed} repeated ids in {data}; later copies are renamed id#2, id#3, ... "
              "(genqa.evaluate matches them the same way)", file=sys.stderr)
    for row, uid in zip(rows, ids, strict=True):
        row["id"] = uid
    return rows, renamed


def fingerprint(args: argparse.Namespace, qa, sft, model_args) -> dict[str, Any]:
    """What makes a set of predictions: model, data file, recipe and decoding settings (not --limit/--batch_size)."""
    import hashlib

    from genqa.recipe import resolved_recipe

    data = Path(args.data)
    recipe = resolved_recipe(qa, sft, model_args)
    for key in ("output_dir", "logging_dir", "run_name", "dry_run"):
        recipe.pop(key, None)
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"base": args.base, "adapter": args.adapter, "data": str(data.resolve()) if data.exists() else args.data,
            "data_bytes": data.stat().st_size if data.is_file() else None,
            "data_mtime": int(data.stat().st_mtime) if data.exists() else None, "split": args.split,
            "mcq_mode": args.mcq_mode, "max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams,
            "do_sample": args.do_sample, "dtype": args.dtype, "autocast": args.autocast, "recipe": digest}


def load_model_for(backbone: str, base: str, adapter: str | None, dtype):
    """The model to predict with: base (merged or not) plus an optional adapter, in eval mode."""
    from genqa.modeling import auto_model_class
    from genqa.tiny import resolve_model_path

    model = auto_model_class(backbone).from_pretrained(resolve_model_path(base), dtype=dtype)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model.eval()


def _tokenizer_and_template(args, qa, template_overridden: bool = False):
    from transformers import AutoTokenizer

    from genqa.modeling import ensure_pad_token
    from genqa.tiny import resolve_model_path

    folder = args.adapter or args.base
    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(resolve_model_path(folder)))
    tokenizer.padding_side = "left"
    saved_by_genqa = (Path(folder) / RECIPE_FILE).is_file() and tokenizer.chat_template
    if saved_by_genqa and not template_overridden:  # exactly the template the model was trained with
        return tokenizer, tokenizer.chat_template
    return tokenizer, load_template(qa.template, tokenizer)


def extractive_settings_for(args: argparse.Namespace, qa, sft) -> dict[str, Any]:
    """Span-search settings: those the run was trained with (saved in its folder), overridden by the ones given on
    this command line; the recipe's values where the run saved none."""
    from genqa.extractive_trainer import SETTINGS_FILE, extractive_settings

    from_recipe = {**extractive_settings(qa, sft.max_length or 384), "version_2_with_negative": True}
    settings = dict(from_recipe)
    saved = next((Path(f) / SETTINGS_FILE for f in (args.adapter, args.base)
                  if f and (Path(f) / SETTINGS_FILE).is_file()), None)
    if saved is not None:
        settings.update(json.loads(saved.read_text(encoding="utf-8")))
    passed = {a[2:].split("=", 1)[0] for a in args.overrides if a.startswith("--")}
    settings.update({k: v for k, v in from_recipe.items() if k in passed})
    return settings


def predict(args: argparse.Namespace, qa, sft, model_args, rows: list[dict[str, Any]],
            store: PredictionStore) -> None:
    """Predict every row not yet in `store`, appending records batch by batch."""
    import torch
    from datasets import Dataset

    from genqa.encoding import PromptEncoder
    from genqa.modeling import detect_backbone, model_device, torch_dtype
    from genqa.predict import generate_texts, read_answer, score_labels
    from genqa.tasks import CANONICAL_FEATURES

    task = get_task(qa)
    todo = [r for r in rows if r["id"] not in store]
    if len(todo) < len(rows):
        print(f"[genqa] resuming: {len(rows) - len(todo)} of {len(rows)} rows already predicted in {store.path}")
    if not todo:
        return
    backbone = detect_backbone(args.base, qa.backbone)
    tokenizer, template = _tokenizer_and_template(args, qa, args.template_overridden)
    model = load_model_for(backbone, args.base, args.adapter, torch_dtype(args.dtype or model_args.dtype))
    max_new = args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[qa.task]

    def records(pairs, how: str) -> list[dict[str, Any]]:
        out = []
        for row, raw in pairs:
            answer, how_row = read_answer(task, row, raw, how)
            out.append({"id": row["id"], "raw": raw, "answer": answer, "how": how_row})
        return out

    def sink(how: str):  # called after each batch, so a kill loses at most one batch
        return lambda done: store.add(records(((todo[i], raw) for i, raw in done), how))

    def chunks():  # seq2seq / extractive predictors take a Dataset: feed them a few batches at a time
        size = args.batch_size * 8
        for start in range(0, len(todo), size):
            chunk = todo[start:start + size]
            yield chunk, Dataset.from_list(chunk, features=CANONICAL_FEATURES)

    device_type = model_device(model).type
    with (torch.autocast(device_type, dtype=torch.bfloat16) if args.autocast == "bf16" else contextlib.nullcontext()):
        if backbone == "causal_lm":
            encoder = PromptEncoder(task, tokenizer, template, sft.max_length)
            if task.name == "mcq" and args.mcq_mode == "score":
                score_labels(model, encoder, todo, task.labels_for, args.batch_size, sink("label_score"),
                             not args.no_progress)
            else:
                generate_texts(model, encoder, todo, args.batch_size, max_new, args.num_beams, args.do_sample,
                               sink("generate"), not args.no_progress)
        elif backbone == "seq2seq":
            from genqa.seq2seq import predict_seq2seq

            for chunk, ds in chunks():
                raws = predict_seq2seq(model, tokenizer, template, task, ds, max_length=sft.max_length or 512,
                                       max_new_tokens=max_new, batch_size=args.batch_size, num_beams=args.num_beams)
                store.add(records(zip(chunk, raws, strict=True), "generate"))
        else:
            from genqa.extractive import predict_extractive

            settings = extractive_settings_for(args, qa, sft)
            for chunk, ds in chunks():
                spans = predict_extractive(model, tokenizer, ds, batch_size=args.batch_size, **settings)
                store.add([{"id": r["id"], "raw": sp, "answer": sp, "how": "span" if sp else "no_answer"}
                           for r, sp in zip(chunk, spans, strict=True)])


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m genqa.generate`."""
    args, overrides = build_parser().parse_known_args(argv)
    try:
        qa, sft, model_args = resolve_recipe(args, overrides)
        task = get_task(qa)
        rows, renamed = load_test_rows(qa, task, args.data, args.split, args.limit)
        out = Path(args.out)
        if renamed and out.suffix != ".json":
            raise SubmissionError(f"{args.data}: {renamed} repeated ids; a submission needs one row per id. Set "
                                  "--id_column to a column with unique ids (or write --out X.json for evaluation).")
        args.overrides = overrides
        args.template_overridden = any(a.split("=", 1)[0] == "--template" for a in overrides)
        store = PredictionStore(out.with_name(out.name + ".predictions.jsonl"), fingerprint(args, qa, sft, model_args))
        predict(args, qa, sft, model_args, rows, store)
        ids = [r["id"] for r in rows]
        answers = {i: store.records[i]["answer"] for i in ids if i in store.records}
        how = dict(Counter(store.records[i]["how"] for i in ids if i in store.records))
        print(f"[genqa] {len(answers)}/{len(ids)} rows predicted; {json.dumps(how, ensure_ascii=False)}")
        if out.suffix == ".json":
            write_json_predictions(out, ids, answers)
        else:
            valid = set(task.args.option_labels) if task.name == "mcq" else None
            stats = write_submission(out, ids, answers, qa.submission_id_column, qa.submission_answer_column,
                                     is_valid=(lambda a: a in valid) if valid else (lambda a: a is not None),
                                     fill=args.fill_missing)
            if stats["filled"]:
                print(f"[genqa] {stats['filled']} missing/invalid answers filled with {args.fill_missing!r}")
        print(f"[genqa] wrote {out}")
        from genqa.task_metrics import has_gold, task_metrics

        if has_gold(task, rows):
            metrics = task_metrics(task, rows, answers, args.lang or qa.metric_lang)
            metrics["predictions"] = how
            write_atomic(out.with_name(out.name + ".metrics.json"), json.dumps(metrics, indent=2, ensure_ascii=False))
            print(json.dumps(metrics, indent=2, ensure_ascii=False))
        return 0
    except GenqaError as err:
        print(f"genqa.generate: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
