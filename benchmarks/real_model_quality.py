"""Zero-shot vs fine-tuned quality of a real pretrained causal LM (SmolLM2-135M-Instruct) on held-out real data.

    python benchmarks/real_model_quality.py --task squad --minutes 8

Trains `recipes/cpu/<task>.yaml` through `genqa.sft` for `--minutes` of training steps (`max_train_minutes`) on the
recipe's training articles, and scores the base model and the fine-tuned one (adapter merged in memory) on the same
held-out rows: the recipe's validation split, which `split_by: article` (SQuAD layout) or `split_by: context` keeps
disjoint from training. Metrics come from `genqa.scoring` directly. Prints one JSON line: `task`, `zero_shot`,
`fine_tuned` (dicts of metrics), `train_minutes`, `tokens_per_s`, `not_in_context` (answers that are not spans of
their context, per setting), the load average and more.

On SQuAD 2.0-style held-out rows, `abstain_all` is the score of answering "no answer" to every question (F1 = the
share of unanswerable questions): a fine-tuned score near it means the model learned to abstain, not to read.

Extractive tasks are scored four ways: free generation (`free`), the same answers read back with `nearest_span`
(`nearest`: an answer that is no span becomes the span most like it), span-constrained decoding (`constrained`, the
default of `task: extractive`) and, for SQuAD 2.0-style data, no-answer calibration (`calibrated`: best span vs the
no-answer text with the threshold picked on `--calib_rows` rows of training articles that were not trained on;
`threshold_0`; `answer_all`, the best span for every question: the model's reading without its abstaining).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TASKS = ("squad", "squad_v1", "viquad", "viquad_v1", "mcq_zh", "kaggle_zh", "vi_exam", "mcq_gen")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--model", choices=("smollm2", "gemma"), default="smollm2",
                   help="smollm2: recipes/cpu/<task>.yaml (SmolLM2-135M-Instruct); gemma: "
                   "recipes/cpu/<task>_gemma.yaml (Gemma 3 270M, the multilingual base model).")
    p.add_argument("--minutes", type=float, default=8.0, help="Training time budget (max_train_minutes).")
    p.add_argument("--eval_rows", type=int, default=200, help="Held-out rows scored (the validation split's first).")
    p.add_argument("--calib_rows", type=int, default=100, help="Rows picking the no-answer threshold (SQuAD 2.0).")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--eval_dtype", choices=("auto", "bf16", "fp32"), default="auto",
                   help="Weights while scoring: bf16 or fp32; auto: bf16 where genqa measured bf16 matmuls faster on "
                   "this machine (AVX512-BF16 / AMX), else fp32 (AVX2-only CPUs run bf16 ~25-50x slower).")
    p.add_argument("--max_new_tokens", type=int, default=None,
                   help="Answer budget of generated answers (default: the recipe's max_new_tokens, else the task's).")
    p.add_argument("--out_dir", default=None, help="Run folder (default runs/bench/<task>_<model>; must not exist); "
                   "with --trained, where the raw outputs are saved (default: the trained run's folder).")
    p.add_argument("--skip_zero_shot", action="store_true")
    p.add_argument("--trained", default=None, metavar="RUN",
                   help="Score this finished run folder of the same recipe instead of training one (its trainer_state "
                   "gives the training figures): a new decoding measured on the same weights.")
    p.add_argument("--layout_only", action="store_true",
                   help="MCQ generation: score layout-constrained decoding only (free decoding is the slow part: "
                   "a model that never stops writes max_new_tokens for every row).")
    p.add_argument("--extractive_modes", default="free,constrained",
                   help="Extractive decodings scored, of free,constrained (calibration runs on SQuAD 2.0-style rows).")
    p.add_argument("--rescore", action="store_true", help="With --trained RUN (extractive): read the fine-tuned free "
                   "answers saved in RUN/bench_outputs.json back again, as they are and with nearest_span, without "
                   "loading the model.")
    p.add_argument("--zero_shot_only", action="store_true", help="Score the base model only (no training).")
    p.add_argument("--threads", type=int, default=1, help="torch threads (on a CPU shared with other jobs, one thread "
                   "was 7x faster per decoding step than two here: oversubscription).")
    return p.parse_args(argv)


def _layout(task):
    """The layout constraint of a task whose answers are written in one (MCQ generation); None otherwise."""
    from genqa.backbones import PredictSettings

    settings = PredictSettings(constrain_to_layout=True, key_from_context=task.args.key_from_context)
    return task.decoding(settings).constraint


def _rows(args, qa, task):
    import dataclasses

    from genqa.data.rows import load_canonical_splits

    # all training rows (the run trains on the first max_train_samples of them)
    train, val, _ = load_canonical_splits(dataclasses.replace(qa, max_train_samples=None), task)
    if val is None:
        raise SystemExit("the recipe has no validation split to hold out")
    held = val.select(range(min(args.eval_rows, len(val)))).to_list()
    calib = []
    if task.name == "extractive" and args.calib_rows > 0 and any(not r["answers"] for r in held):
        # the last training rows come from the last training articles; max_train_samples keeps them out of training
        used = min(qa.max_train_samples or len(train), len(train))
        if used + args.calib_rows > len(train):
            raise SystemExit(f"no untrained rows left for calibration: lower max_train_samples below {used}")
        calib = train.select(range(len(train) - args.calib_rows, len(train))).to_list()
    return held, calib


def _not_in_context(rows, answers) -> int:
    return sum(1 for r in rows if answers[r["id"]] and answers[r["id"]] not in r["context"])


def _score(task, rows, raw: list[str], how: str, lang: str, record: dict | None = None,
           setting: str = "") -> tuple[dict[str, Any], int]:
    """Metrics of raw outputs (and how many answers are not spans of their context); `record[setting]` keeps the
    raw outputs by row id, written next to the run for inspection."""
    from genqa.scoring.task_metrics import task_metrics

    if record is not None:
        record[setting] = {r["id"]: t for r, t in zip(rows, raw, strict=True)}
    answers = {r["id"]: task.read_answer(r, t, how)[0] for r, t in zip(rows, raw, strict=True)}
    metrics = {k: round(v, 2) if isinstance(v, float) else v for k, v in task_metrics(task, rows, answers, lang).items()
               if not isinstance(v, list) and (not isinstance(v, dict) or k == "failures")}
    return metrics, _not_in_context(rows, answers) if task.name == "extractive" else 0


def _nearest(task):
    """The task reading free answers back with `nearest_span` (the recipe's other keys kept)."""
    import dataclasses

    from genqa.data.tasks import get_task

    return get_task(dataclasses.replace(task.args, constrain_to_context=False, nearest_span=True))


def _rescore(args, task, rows, lang) -> dict[str, Any]:
    """Free and nearest-span scores of the free answers a finished benchmark saved (`--rescore`)."""
    path = Path(args.trained) / "bench_outputs.json"
    if not path.is_file():
        raise SystemExit(f"--rescore: {path} does not exist (a benchmark run scoring free answers writes it)")
    saved = json.loads(path.read_text(encoding="utf-8"))["fine_tuned"]["free"]
    raw = [saved[r["id"]] for r in rows]
    out: dict[str, Any] = {}
    for name, how in (("free", task), ("nearest", _nearest(task))):
        out[name], out[f"not_in_context_{name}"] = _score(how, rows, raw, "generate", lang)
    return out


def _extractive(model, encoder, task, rows, calib, args, lang) -> tuple[dict, dict, dict]:
    """Free / constrained / calibrated scores, answers outside their context, stop share."""
    from genqa.backbones.generation import generate_texts
    from genqa.backbones.no_answer import apply_threshold, best_threshold, null_score_diffs
    from genqa.data.task import SpanOfContext
    from genqa.scoring.metrics import f1_score

    null, n_new = task.args.no_answer_text, args.max_new_tokens or task.answer_budget
    kw = dict(batch_size=args.batch_size, max_new_tokens=n_new, progress=False)
    stopped: dict[int, bool] = {}
    out, outside = {}, {}
    modes, extra = args.extractive_modes.split(","), {}
    if "free" in modes:
        free = generate_texts(model, encoder, rows, stopped=stopped, **kw)
        out["free"], outside["free"] = _score(task, rows, free, "generate", lang, args.record, "free")
        extra["stopped_share"] = round(sum(stopped.values()) / max(1, len(stopped)), 3)
        # the same free answers read back with `nearest_span` (no second decoding)
        out["nearest"], outside["nearest"] = _score(_nearest(task), rows, free, "generate", lang)
    if "constrained" in modes:
        cons = generate_texts(model, encoder, rows, constraint=SpanOfContext(null), **kw)
        out["constrained"], outside["constrained"] = _score(task, rows, cons, "generate", lang, args.record,
                                                              "constrained")
    if calib:
        spans_c = generate_texts(model, encoder, calib, constraint=SpanOfContext(), **kw)
        diffs_c = null_score_diffs(model, encoder, calib, spans_c, null, args.batch_size, n_new)
        f1s = [max((f1_score(s, g, lang) for g in r["answers"]), default=0.0) for s, r in zip(spans_c, calib,
                                                                                            strict=True)]
        thr, calib_f1 = best_threshold(diffs_c, f1s, [bool(r["answers"]) for r in calib])
        spans = generate_texts(model, encoder, rows, constraint=SpanOfContext(), **kw)
        diffs = null_score_diffs(model, encoder, rows, spans, null, args.batch_size, n_new)
        out["calibrated"], outside["calibrated"] = _score(task, rows, apply_threshold(spans, diffs, thr), "generate",
                                                          lang, args.record, "calibrated")
        out["threshold_0"], _ = _score(task, rows, apply_threshold(spans, diffs, 0.0), "generate", lang)
        # never abstaining: the best span for every question (HasAns F1 here is the model's reading alone)
        out["answer_all"], _ = _score(task, rows, spans, "generate", lang, args.record, "answer_all")
        if args.record is not None:
            args.record["no_answer_diffs"] = {r["id"]: round(d, 4) for r, d in zip(rows, diffs, strict=True)}
        extra.update(no_answer_threshold=round(thr, 3), calibration_f1=round(calib_f1, 2), calibration_rows=len(calib))
    return out, outside, extra


def _mcq(model, encoder, task, rows, args, lang) -> dict[str, Any]:
    """MCQ answering both ways: the labels scored (`mcq_mode: score`), and the options' texts scored as the answer,
    per character (`options`, lm-evaluation-harness acc_norm) and summed (`options_sum`, acc), from one pass."""
    from collections import Counter

    from genqa.backbones import PredictSettings
    from genqa.backbones.generation import best_candidate, candidate_scores, score_labels

    out = {}
    raw = score_labels(model, encoder, rows, task.labels_for, args.batch_size, progress=False)
    out["label_scoring"], _ = _score(task, rows, raw, "label_score", lang, args.record, "label_scoring")
    out["label_scoring"]["predicted_labels"] = dict(sorted(Counter(raw).items()))
    decoding = task.decoding(PredictSettings(), "options")
    cands, scores = candidate_scores(model, encoder, rows, decoding.candidates_of, max(1, args.batch_size // 4))
    for mode, per_char in (("options", True), ("options_sum", False)):
        raw = [best_candidate(c, s, per_char) for c, s in zip(cands, scores, strict=True)]
        out[mode], _ = _score(task, rows, raw, "option_score", lang, args.record, mode)
        out[mode]["predicted_labels"] = dict(sorted(Counter(raw).items()))
    return out


def evaluate(model, tokenizer, template, task, rows, calib, args, lang) -> tuple[dict, dict, dict]:
    """Metrics of `model` on the held-out rows (and the not-in-context counts, stop share)."""
    import torch

    from genqa.backbones.generation import generate_texts
    from genqa.data.encoding import PromptEncoder

    encoder = PromptEncoder(task, tokenizer, template, args.max_length)
    if args.eval_bf16:  # bf16 weights: decoding steps are small matmuls, where autocast would recast every weight
        model = model.to(torch.bfloat16)
    with torch.no_grad():
        if task.name == "extractive":
            return _extractive(model, encoder, task, rows, calib, args, lang)
        if task.scores_labels:
            return _mcq(model, encoder, task, rows, args, lang), {}, {}
        stopped: dict[int, bool] = {}
        kw = dict(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens or task.answer_budget, progress=False)
        out, extra = {}, {}
        if not args.layout_only:
            raw = generate_texts(model, encoder, rows, stopped=stopped, **kw)
            out["generate"], _ = _score(task, rows, raw, "generate", lang, args.record, "generate")
            extra["stopped_share"] = round(sum(stopped.values()) / max(1, len(stopped)), 3)
        if _layout(task) is not None:  # MCQ generation: layout-constrained decoding too (the recipe default)
            stopped.clear()
            raw = generate_texts(model, encoder, rows, stopped=stopped, constraint=_layout(task), **kw)
            out["layout"], _ = _score(task, rows, raw, "generate", lang, args.record, "layout")
            extra["layout_stopped_share"] = round(sum(stopped.values()) / max(1, len(stopped)), 3)
        return out, {}, extra


def train(recipe: str, out_dir: str, minutes: float, threads: int) -> None:
    """`genqa.sft` on the recipe under a time budget, in a process of its own: the memory training holds (allocator
    arenas the process keeps after the trainer is gone, 10-16 GB for Gemma 3 here) is returned before scoring."""
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    rc = subprocess.call([sys.executable, "-m", "genqa.sft", recipe, "--output_dir", out_dir,
                          "--max_train_minutes", str(minutes)], env=env, cwd=ROOT)
    if rc:
        raise SystemExit(f"genqa.sft failed ({rc})")


def training_figures(out_dir: str) -> dict[str, Any]:
    """Training minutes, trained tokens/s, steps and first / last logged loss of a finished run folder, from its
    trainer state. A checkpoint folder (`RUN/checkpoint-N`, a point of a score-vs-minutes curve: with a constant
    learning rate it is the run a budget of N steps gives) has no runtime of its own: its minutes are the finished
    run's, scaled by N / the run's steps (`train_minutes_scaled`)."""
    log = json.loads((Path(out_dir) / "trainer_state.json").read_text())
    losses = [h["loss"] for h in log["log_history"] if "loss" in h]
    tokens = max((h.get("num_tokens", 0) for h in log["log_history"]), default=0)
    out = {"steps": log["global_step"], "loss_first_last": [losses[0], losses[-1]] if losses else None}
    runtime = next((h["train_runtime"] for h in reversed(log["log_history"]) if "train_runtime" in h), None)
    if runtime is None:  # a checkpoint: the finished run beside it gives the time per step
        parent = json.loads((Path(out_dir).parent / "trainer_state.json").read_text())
        runtime = next(h["train_runtime"] for h in reversed(parent["log_history"]) if "train_runtime" in h)
        runtime *= log["global_step"] / parent["global_step"]
        out["train_minutes_scaled"] = True
    out.update(train_minutes=round(runtime / 60.0, 2), tokens_per_s=round(tokens / runtime if runtime else 0.0, 2))
    return out


def main(argv: list[str] | None = None) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genqa.backbones.loading import resolve_model_path
    from genqa.data.tasks import get_task
    from genqa.data.templates import load_template
    from genqa.hardware import precision_for, probe
    from genqa.recipe import parse_recipe

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.eval_bf16 = args.eval_dtype == "bf16" or (args.eval_dtype == "auto" and precision_for(None, use_cpu=True).bf16)
    os.chdir(ROOT)
    recipe = f"recipes/cpu/{args.task}{'_gemma' if args.model == 'gemma' else ''}.yaml"
    qa, sft, model_args, _ = parse_recipe([recipe, "--use_cpu", "true"])
    args.max_length = sft.max_length
    task = get_task(qa)
    rows, calib = _rows(args, qa, task)
    base = resolve_model_path(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.padding_side = "left"
    template = load_template(qa.template, tokenizer)
    result: dict[str, Any] = {"task": args.task, "model": args.model,
                              "recipe": recipe, "held_out_rows": len(rows), "minutes": args.minutes,
                              "threads": torch.get_num_threads(), "bf16_eval": args.eval_bf16,
                              "cpu_bf16_speedup": probe()["bf16_speedup"]}
    if task.name == "extractive" and any(not r["answers"] for r in rows):
        # the score of answering "no answer" to every question: what a model that only learned to abstain gets
        result["abstain_all"], _ = _score(task, rows, [qa.no_answer_text] * len(rows), "generate", qa.metric_lang)
    if _layout(task) is not None:  # the same metric over the held-out rows' own questions: what people wrote
        result["gold"], _ = _score(task, rows, [task.target(r) for r in rows], "generate", qa.metric_lang)
    if args.rescore:
        if not args.trained or task.name != "extractive":
            raise SystemExit("--rescore reads the saved free answers of an extractive --trained RUN")
        print(json.dumps({**result, "trained_run": args.trained, **_rescore(args, task, rows, qa.metric_lang)},
                         ensure_ascii=False))
        return
    # the raw outputs are saved beside the run; a --trained run's earlier ones are kept (another --out_dir, or refused)
    saved = Path(args.out_dir if args.trained and args.out_dir else args.trained or args.out_dir
                 or f"runs/bench/{args.task}_{args.model}")
    saved = saved / ("bench_outputs_layout.json" if args.layout_only else "bench_outputs.json")
    if args.trained and saved.exists():
        raise SystemExit(f"{saved} exists (an earlier scoring of this run): pass --out_dir DIR to save these outputs "
                         "there")
    outputs: dict[str, dict] = {}
    t0 = time.time()
    if not args.skip_zero_shot:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
        args.record = outputs["zero_shot"] = {}
        # no-answer calibration is measured on the fine-tuned model (before / after calibration)
        result["zero_shot"], zs_out, zs_extra = evaluate(model, tokenizer, template, task, rows, [], args,
                                                         qa.metric_lang)
        result["zero_shot_extra"], result["not_in_context_zero_shot"] = zs_extra, zs_out
        del model
        print(json.dumps({"zero_shot": result["zero_shot"]}), flush=True)
    result["zero_shot_eval_s"] = round(time.time() - t0, 1)
    if args.zero_shot_only:
        print(json.dumps(result, ensure_ascii=False))
        return
    out_dir = args.trained or args.out_dir or f"runs/bench/{args.task}_{args.model}"
    load_before = os.getloadavg()[0]
    if args.trained:
        result["trained_run"] = out_dir
    else:
        train(recipe, out_dir, args.minutes, args.threads)
    result.update(training_figures(out_dir))
    result["load_avg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, out_dir).merge_and_unload().eval()
    t0 = time.time()
    args.record = outputs["fine_tuned"] = {}
    result["fine_tuned"], result["not_in_context"], result["fine_tuned_extra"] = evaluate(
        model, tokenizer, template, task, rows, calib, args, qa.metric_lang)
    result["fine_tuned_eval_s"] = round(time.time() - t0, 1)
    print("\n" + json.dumps(result, ensure_ascii=False), flush=True)  # its own line, whatever stderr left open
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(outputs, ensure_ascii=False, indent=1), encoding="utf-8", errors="backslashreplace")
    print(f"raw outputs: {saved}", file=sys.stderr)


if __name__ == "__main__":
    main()
