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

from genqa.data.rows import load_rows
from genqa.data.tasks import get_task
from genqa.data.templates import load_template
from genqa.errors import report_errors
from genqa.files import write_atomic
from genqa.hardware import resolve_autocast
from genqa.recipe import RecipeError, parse_recipe
from genqa.run_dir import RECIPE_FILE, load_run
from genqa.scoring.metrics import LANGS
from genqa.submission import PredictionStore, SubmissionError, write_json_predictions, write_submission


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
    p.add_argument("--autocast", choices=("none", "bf16", "auto"), default="none",
                   help="Run the forward passes under bf16 autocast (weights stay as loaded): 2-4x faster on CPUs "
                   "with AVX512-BF16 / AMX and on GPUs, about 50x slower on CPUs without bf16 instructions (AVX2). "
                   "`auto`: bf16 only where genqa measured it faster on this machine (`genqa env`).")
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


def load_model_for(backbone, base: str, adapter: str | None, dtype):
    """The model to predict with: base (merged or not) plus an optional adapter, in eval mode."""
    from genqa.backbones import auto_class
    from genqa.backbones.loading import resolve_model_path

    model = auto_class(backbone).from_pretrained(resolve_model_path(base), dtype=dtype)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model.eval()


def _tokenizer_and_template(args, qa, template_overridden: bool = False):
    from transformers import AutoTokenizer

    from genqa.backbones.loading import ensure_pad_token, resolve_model_path

    folder = args.adapter or args.base
    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(resolve_model_path(folder)))
    tokenizer.padding_side = "left"
    saved_by_genqa = (Path(folder) / RECIPE_FILE).is_file() and tokenizer.chat_template
    if saved_by_genqa and not template_overridden:  # exactly the template the model was trained with
        return tokenizer, tokenizer.chat_template
    return tokenizer, load_template(qa.template, tokenizer)


def predict(args: argparse.Namespace, qa, sft, model_args, rows: list[dict[str, Any]],
            store: PredictionStore) -> None:
    """Predict every row not yet in `store`, appending records batch by batch (a kill loses at most one batch)."""
    import torch

    from genqa.backbones import PredictOptions, get_backbone
    from genqa.backbones.loading import detect_backbone, model_device, torch_dtype

    task = get_task(qa)
    todo = [r for r in rows if r["id"] not in store]
    if len(todo) < len(rows):
        print(f"[genqa] resuming: {len(rows) - len(todo)} of {len(rows)} rows already predicted in {store.path}")
    if not todo:
        return
    backbone = get_backbone(detect_backbone(args.base, qa.backbone))
    tokenizer, template = _tokenizer_and_template(args, qa, args.template_overridden)
    model = load_model_for(backbone, args.base, args.adapter, torch_dtype(args.dtype or model_args.dtype))
    passed = {a[2:].split("=", 1)[0] for a in args.overrides if a.startswith("--")}
    options = PredictOptions(
        max_length=sft.max_length, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens or task.max_new_tokens,
        num_beams=args.num_beams, do_sample=args.do_sample, mcq_mode=args.mcq_mode, progress=not args.no_progress,
        settings=backbone.prediction_settings([args.adapter, args.base], qa, sft, passed))

    def on_batch(done: list[tuple[int, str]], how: str) -> None:
        records = []
        for i, raw in done:
            answer, how_row = task.read_answer(todo[i], raw, how)
            records.append({"id": todo[i]["id"], "raw": raw, "answer": answer, "how": how_row})
        store.add(records)

    device_type = model_device(model).type
    with (torch.autocast(device_type, dtype=torch.bfloat16) if args.autocast == "bf16" else contextlib.nullcontext()):
        backbone.predict(model, tokenizer, template, task, todo, options, on_batch)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    """Predict, write the submission (or SQuAD JSON) and, when the data carries answers, the metrics."""
    qa, sft, model_args = resolve_recipe(args, overrides)
    task = get_task(qa)
    rows, renamed = load_rows(task, args.data, args.split, limit=args.limit)
    out = Path(args.out)
    if renamed and out.suffix != ".json":
        raise SubmissionError(f"{args.data}: {renamed} repeated ids; a submission needs one row per id. Set "
                              "--id_column to a column with unique ids (or write --out X.json for evaluation).")
    args.overrides = overrides
    args.autocast = resolve_autocast(args.autocast)  # what runs is recorded: `auto` resolved, per machine
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
        stats = write_submission(out, ids, answers, qa.submission_id_column, qa.submission_answer_column,
                                 is_valid=task.is_valid_answer, fill=args.fill_missing)
        if stats["filled"]:
            print(f"[genqa] {stats['filled']} missing/invalid answers filled with {args.fill_missing!r}")
    print(f"[genqa] wrote {out}")
    if task.has_gold(rows):
        from genqa.scoring.task_metrics import task_metrics

        metrics = task_metrics(task, rows, answers, args.lang or qa.metric_lang)
        metrics["predictions"] = how
        write_atomic(out.with_name(out.name + ".metrics.json"), json.dumps(metrics, indent=2, ensure_ascii=False))
        print(json.dumps(metrics, indent=2, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m genqa.generate`."""
    args, overrides = build_parser().parse_known_args(argv)
    return report_errors("genqa.generate", lambda: run(args, overrides))


if __name__ == "__main__":
    sys.exit(main())
