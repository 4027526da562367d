"""Prediction speed, measured in one run on the same tiny model and data (offline, CPU).

1. MCQ answering: genqa's one-pass label scoring vs a plain notebook loop (one prompt at a time, `model.generate`,
   read the answer from the output). Target: >= 20x.
2. Free generation: genqa's batched, length-sorted, left-padded generation vs one prompt at a time, same greedy
   settings; also reports how many outputs are identical. Target: >= 5x.

    .venv/bin/python benchmarks/generation_speed.py [--rows 64] [--batch_size 16] [--max_new_tokens 32]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    """Run both comparisons and print the ratios."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genqa.config import QAArguments
    from genqa.data_sources import load_source
    from genqa.encoding import PromptEncoder
    from genqa.predict import generate_texts, score_labels
    from genqa.tasks import get_task
    from genqa.templates import load_template
    from genqa.tiny import resolve_model_path

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--mcq_new_tokens", type=int, default=8, help="Tokens a notebook loop generates per MCQ answer.")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (tiny models: 1 is fastest).")
    p.add_argument("--hidden", type=int, default=0, help="Use a random Llama of this width instead of tiny:llama.")
    p.add_argument("--layers", type=int, default=4, help="Layers of the --hidden model.")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    path = resolve_model_path("tiny:llama")
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    if args.hidden:
        # A bigger model of the same architecture (random weights: timing only) so per-token work is not hidden by
        # Python overhead the way it is with the 0.2M-parameter tiny model.
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = AutoModelForCausalLM.from_pretrained(path).config.to_dict()
        cfg.update(hidden_size=args.hidden, intermediate_size=int(args.hidden * 2.75), num_hidden_layers=args.layers,
                   num_attention_heads=max(1, args.hidden // 64), num_key_value_heads=max(1, args.hidden // 128))
        model = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    qa = QAArguments(task="mcq", template="llama2", id_column="ID", context_column="文章", question_column="問題",
                     options_columns=["選項1", "選項2", "選項3", "選項4"], answer_column="正確答案",
                     option_labels=["1", "2", "3", "4"])
    task = get_task(qa)
    base = task.to_canonical(load_source("data/tiny/zh_mcq.xlsx")["train"], "zh_mcq").to_list()
    rows = [dict(base[i % len(base)], id=str(i)) for i in range(args.rows)]
    encoder = PromptEncoder(task, tok, load_template("llama2"), max_length=1024)
    print(f"model: tiny:llama ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params), {len(rows)} rows, "
          f"{torch.get_num_threads()} threads")

    # 1. MCQ: label scoring vs notebook loop
    t = time.perf_counter()
    scored = score_labels(model, encoder, rows, task.labels_for, args.batch_size, progress=False)
    t_score = time.perf_counter() - t
    t = time.perf_counter()
    loop_answers, loop_raw = [], []
    with torch.inference_mode():
        for ex in rows:
            ids = tok(encoder.prompt_text(ex), return_tensors="pt", add_special_tokens=False)
            out = model.generate(**ids, max_new_tokens=args.mcq_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
            raw = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
            loop_raw.append(raw.strip())
            loop_answers.append(task.parse(raw, ex))
    t_loop = time.perf_counter() - t
    unparseable = sum(a is None for a in loop_answers)
    starts = [(s, r[0]) for s, r in zip(scored, loop_raw, strict=True) if r[:1] in {"1", "2", "3", "4"}]
    agree = sum(a == b for a, b in starts)  # greedy's first token is a label: scoring must pick the same one
    print(f"MCQ label scoring : {len(rows) / t_score:8.1f} ex/s ({t_score:.2f} s), every answer a valid label")
    print(f"MCQ notebook loop : {len(rows) / t_loop:8.1f} ex/s ({t_loop:.2f} s), {unparseable} unparseable answers; "
          f"where greedy output starts with a label, label scoring agrees on {agree}/{len(starts)}")
    ratio = t_loop / t_score
    print(f"  ratio label scoring / notebook loop: {ratio:.1f}x (target >= 20x: {'met' if ratio >= 20 else 'NOT met'})")

    # 2. batched vs one-by-one free generation (same greedy settings)
    t = time.perf_counter()
    batched = generate_texts(model, encoder, rows, args.batch_size, args.max_new_tokens, progress=False)
    t_batched = time.perf_counter() - t
    t = time.perf_counter()
    single = generate_texts(model, encoder, rows, 1, args.max_new_tokens, progress=False)
    t_single = time.perf_counter() - t
    same = sum(a == b for a, b in zip(batched, single, strict=True))
    print(f"batched generation (batch {args.batch_size}): {len(rows) / t_batched:8.1f} ex/s ({t_batched:.2f} s)")
    print(f"one-by-one generation         : {len(rows) / t_single:8.1f} ex/s ({t_single:.2f} s)")
    ratio = t_single / t_batched
    print(f"  ratio batched / one-by-one: {ratio:.1f}x (target >= 5x: {'met' if ratio >= 5 else 'NOT met'}); "
          f"identical outputs {same}/{len(rows)}")


if __name__ == "__main__":
    main()
