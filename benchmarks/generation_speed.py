"""Prediction speed, measured in one run on the same model and data (offline; CPU by default).

1. MCQ answering: genqa's label scoring (one forward pass per batch, the prompts' shared prefix run once) vs a plain
   notebook loop (one prompt at a time, `model.generate` until EOS or `--mcq_new_tokens`, read the answer from the
   output). Target: >= 20x.
2. Free generation: genqa's batched, length-sorted, left-padded generation vs one prompt at a time, same greedy
   settings; also reports how many outputs are identical. Target: >= 5x.

Both sides always run the same model, weights dtype, device and thread count. The cost breakdown printed first
(per-example prompt forward vs one decoding step) tells which regime a machine is in: where the prompt's forward
pass is compute-bound (a CPU), both sides pay it and the ratio is bounded by how many decoding steps the loop takes;
where per-step latency dominates (a GPU), batching and skipping decoding pay off fully.

    .venv/bin/python benchmarks/generation_speed.py                      # tiny:llama, bundled sample sheet
    .venv/bin/python benchmarks/generation_speed.py --dtype bf16          # bf16 weights on both sides
    .venv/bin/python benchmarks/generation_speed.py --model runs/demo/zh_mcq/merged   # a trained model (the demo's)
    .venv/bin/python benchmarks/generation_speed.py --data ../shared/data/kaggle_zh_mcq/AI.xlsx --rows 256
    python benchmarks/generation_speed.py --device cuda --model MERGED_MODEL --dtype bf16 --threads 0   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's genqa

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _timed(device: torch.device, fn):
    """(fn(), wall seconds), waiting for the GPU's queued work where there is one."""
    t = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - t


def main() -> None:
    """Run both comparisons and print the ratios."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genqa.backbones.generation import SharedPrefix, encode_prompts, generate_texts, score_labels
    from genqa.backbones.loading import resolve_model_path
    from genqa.data.encoding import PromptEncoder
    from genqa.data.sources import load_source
    from genqa.data.tasks import get_task
    from genqa.data.templates import load_template
    from genqa.recipe import parse_recipe
    from genqa.run_dir import RECIPE_FILE, load_run

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny:llama", help="A causal LM folder or `tiny:llama` (untrained on MCQ).")
    p.add_argument("--data", default="data/tiny/zh_mcq.xlsx",
                   help="An xlsx in the Kaggle layout (文章, 問題, 選項1..4, 正確答案), cycled to --rows rows.")
    p.add_argument("--max_length", type=int, default=0,
                   help="Prompt budget in tokens (contexts are cut to fit); 0: the recipe's max_length.")
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--mcq_new_tokens", type=int, default=8,
                   help="Most tokens the notebook loop generates per MCQ answer (it stops earlier at EOS).")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="Weights dtype, the same on both sides.")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (tiny models on CPU: 1 is fastest); 0 keeps torch's default.")
    p.add_argument("--hidden", type=int, default=0, help="Use a random Llama of this width instead of --model.")
    p.add_argument("--layers", type=int, default=4, help="Layers of the --hidden model.")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    path = resolve_model_path(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    if args.hidden:
        # A bigger model of the same architecture (random weights: timing only) so per-token work is not hidden by
        # Python overhead the way it is with the 0.2M-parameter tiny model.
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = AutoModelForCausalLM.from_pretrained(path).config.to_dict()
        cfg.update(hidden_size=args.hidden, intermediate_size=int(args.hidden * 2.75), num_hidden_layers=args.layers,
                   num_attention_heads=max(1, args.hidden // 64), num_key_value_heads=max(1, args.hidden // 128))
        model = LlamaForCausalLM(LlamaConfig(**cfg))
    else:
        model = AutoModelForCausalLM.from_pretrained(path)
    model = model.to(device=device, dtype=DTYPES[args.dtype]).eval()
    # prompted exactly as the model was trained: a genqa run's own recipe and template, else the tiny MCQ recipe's
    is_run = (Path(path) / RECIPE_FILE).is_file()
    qa, sft, _ = load_run(path) if is_run else parse_recipe(["recipes/tiny/mcq.yaml", "--on_bad_row", "skip"])[:3]
    template = tok.chat_template if is_run and tok.chat_template else load_template(qa.template, tok)
    qa.on_bad_row = "skip"  # the real Kaggle sheet has one row with an empty option (ID 2463); skipped, counted
    task = get_task(qa)
    source = load_source(args.data)
    base = task.to_canonical(source[next(iter(source))], args.data).to_list()
    rows = [dict(base[i % len(base)], id=str(i)) for i in range(args.rows)]
    encoder = PromptEncoder(task, tok, template, max_length=args.max_length or sft.max_length)
    prompts = encode_prompts(encoder, rows, 8)
    shared = SharedPrefix(model, prompts).length
    mean_len = sum(map(len, prompts)) / len(prompts)
    print(f"model: {args.model if not args.hidden else f'random Llama {args.hidden}x{args.layers}'} "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, {args.dtype}) on {device}, "
          f"{torch.get_num_threads()} threads; {len(rows)} rows ({len(base)} distinct) from {args.data}; "
          f"prompts {mean_len:.0f} tokens on average (max_length {encoder.max_length}), {shared} shared by all")

    # cost breakdown, one prompt at a time: the prompt's forward pass vs one decoding step
    with torch.inference_mode():
        probe = [torch.tensor([ids], device=device) for ids in prompts[:16]]
        model(input_ids=probe[0])  # warm-up
        _, t_prompt = _timed(device, lambda: [model(input_ids=ids, logits_to_keep=1) for ids in probe])
        _, t_gen = _timed(device, lambda: [model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                                          max_new_tokens=9, min_new_tokens=9, do_sample=False,
                                                          pad_token_id=tok.pad_token_id) for ids in probe])
    t_prompt /= len(probe)
    t_step = (t_gen / len(probe) - t_prompt) / 8
    print(f"one prompt at a time: forward pass {t_prompt * 1e3:.2f} ms, each new token {t_step * 1e3:.2f} ms")

    # 1. MCQ: label scoring vs notebook loop
    scored, t_score = _timed(device, lambda: score_labels(model, encoder, rows, task.labels_for, args.batch_size,
                                                          progress=False))

    @torch.inference_mode()
    def notebook_loop() -> tuple[list, list, int]:
        answers, first_tokens, new_tokens = [], [], 0
        for ex in rows:
            # the same prompt label scoring sees (context cut to fit max_length), tokenized one at a time
            ids = torch.tensor([encoder.encode_prompt(ex, args.mcq_new_tokens)[0]], device=device)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=args.mcq_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            answer = out[0, ids.shape[1]:]
            new_tokens += len(answer)
            first_tokens.append(answer[0].item() if len(answer) else None)
            answers.append(task.parse(tok.decode(answer, skip_special_tokens=True), ex))
        return answers, first_tokens, new_tokens

    (loop_answers, first_tokens, new_tokens), t_loop = _timed(device, notebook_loop)
    unparseable = sum(a is None for a in loop_answers)
    # where greedy's first token is a label token, scoring (argmax over the labels) must pick that label
    label_of = {encoder.token_ids(lab, is_prompt=False)[0]: lab for lab in qa.option_labels}
    starts = [(s, label_of[t]) for s, t in zip(scored, first_tokens, strict=True) if t in label_of]
    agree = sum(a == b for a, b in starts)
    print(f"MCQ label scoring : {len(rows) / t_score:8.1f} ex/s ({t_score:.2f} s), every answer a valid label")
    print(f"MCQ notebook loop : {len(rows) / t_loop:8.1f} ex/s ({t_loop:.2f} s), {new_tokens / len(rows):.1f} new "
          f"tokens per answer, {unparseable} unparseable answers; "
          f"where greedy's first token is a label, label scoring agrees on {agree}/{len(starts)}")
    ratio = score_ratio = t_loop / t_score
    print(f"  ratio label scoring / notebook loop: {ratio:.1f}x (target >= 20x: {'met' if ratio >= 20 else 'NOT met'})")

    # 2. batched vs one-by-one free generation (same greedy settings)
    batched, t_batched = _timed(device, lambda: generate_texts(model, encoder, rows, args.batch_size,
                                                               args.max_new_tokens, progress=False))
    single, t_single = _timed(device, lambda: generate_texts(model, encoder, rows, 1, args.max_new_tokens,
                                                             progress=False))
    same = sum(a == b for a, b in zip(batched, single, strict=True))
    print(f"batched generation (batch {args.batch_size}): {len(rows) / t_batched:8.1f} ex/s ({t_batched:.2f} s)")
    print(f"one-by-one generation         : {len(rows) / t_single:8.1f} ex/s ({t_single:.2f} s)")
    ratio = t_single / t_batched
    print(f"  ratio batched / one-by-one: {ratio:.1f}x (target >= 5x: {'met' if ratio >= 5 else 'NOT met'}); "
          f"identical outputs {same}/{len(rows)}")
    print(json.dumps({"benchmark": "generation_speed", "model": args.model, "device": str(device), "dtype": args.dtype,
                      "rows": len(rows), "prompt_tokens": round(mean_len, 1),
                      "label_scoring_ex_s": round(len(rows) / t_score, 1),
                      "notebook_loop_ex_s": round(len(rows) / t_loop, 1), "ratio_label_scoring": round(score_ratio, 2),
                      "batched_ex_s": round(len(rows) / t_batched, 1),
                      "one_by_one_ex_s": round(len(rows) / t_single, 1),
                      "ratio_batched": round(ratio, 2), "identical": same}))


if __name__ == "__main__":
    main()
