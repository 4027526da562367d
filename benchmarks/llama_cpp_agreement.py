"""llama.cpp vs `genqa predict` on the same rows: does the exported GGUF file answer as genqa does, and how fast?

    python benchmarks/llama_cpp_agreement.py --merged MERGED --gguf model.gguf --data TEST.json --limit 100

`MERGED` is the folder `genqa merge` wrote (it holds the run's recipe, tokenizer and chat template), `model.gguf` what
`genqa export` wrote from it. Both answer the first `--limit` rows of `--data` greedily, with free decoding (llama.cpp
has no span constraint):

- genqa: the `genqa predict` command itself (`--constrain_to_context false`), in a subprocess; its wall time includes
  loading the model.
- llama.cpp: `llama-cpp-python` (the llama.cpp library, built from source here) loads the `.gguf` file and
  completes genqa's prompt ids (the same ids, so a difference is the model file or the kernels, not the prompt);
  the answer is read back as genqa reads its own (`Task.read_answer`) and scored with the same metric.

Also checked, as a llama.cpp chat user would send it: the chat template stored in the file, rendered by
llama-cpp-python's own `Jinja2ChatFormatter` on the row's messages and tokenized by llama.cpp, must give genqa's
prompt ids (rows whose context genqa cut to fit `max_length` are skipped: a chat client sends the whole context).

Prints one JSON line: agreement (same raw answer text), each side's metric, tokens generated, seconds, threads, CPU
flags. Needs `pip install llama-cpp-python` (a source build: no CPU wheel is on PyPI); not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--merged", required=True, help="The merged folder the GGUF file was exported from.")
    p.add_argument("--gguf", required=True, help="The file `genqa export` wrote.")
    p.add_argument("--data", required=True, help="Rows with gold answers (any source genqa reads).")
    p.add_argument("--split", default=None)
    p.add_argument("--limit", type=int, default=100, help="First N rows of --data.")
    p.add_argument("--lang", default="en", choices=("en", "vi", "zh"), help="Metric normalisation.")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="Threads of both sides.")
    p.add_argument("--max_new_tokens", type=int, default=None, help="Default: the recipe's or the task's.")
    p.add_argument("--batch_size", type=int, default=16, help="genqa predict's batch size.")
    p.add_argument("--out_dir", default=None, help="Where genqa predict writes (default: a temporary folder).")
    return p.parse_args(argv)


def genqa_side(args: argparse.Namespace, out_dir: Path, new_tokens: int) -> tuple[dict[str, str], float]:
    """Raw answers of `genqa predict` (free decoding) by row id, and the command's wall seconds."""
    out = out_dir / "genqa_free.json"
    cmd = [sys.executable, "-m", "genqa", "predict", "--base", args.merged, "--data", args.data, "--out", str(out),
           "--limit", str(args.limit), "--batch_size", str(args.batch_size), "--max_new_tokens", str(new_tokens),
           "--lang", args.lang, "--no_progress", "--overwrite", "--constrain_to_context", "false"]
    if args.split:
        cmd += ["--split", args.split]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in out.with_name(out.name + ".predictions.jsonl").read_text().splitlines()]
    return {r["id"]: r["raw"] for r in records if "id" in r}, seconds


def chat_template_check(llm, encoder, rows: list[dict[str, Any]], prompts: list[list[int]],
                        cut: list[bool]) -> dict[str, int]:
    """Rows whose prompt, rendered by llama-cpp-python from the file's own chat template and tokenized by llama.cpp,
    equals genqa's prompt ids."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    meta = llm.metadata
    vocab = [llm.detokenize([i], special=True).decode("utf-8", "replace") for i in (llm.token_bos(), llm.token_eos())]
    formatter = Jinja2ChatFormatter(template=meta["tokenizer.chat_template"], bos_token=vocab[0], eos_token=vocab[1])
    same = checked = 0
    for row, ids, was_cut in zip(rows, prompts, cut, strict=True):
        if was_cut:
            continue
        text = formatter(messages=encoder.task.messages(row, with_answer=False)).prompt
        theirs = llm.tokenize(text.encode("utf-8"), add_bos=not text.startswith(vocab[0]), special=True)
        checked += 1
        same += theirs == ids
    return {"rows_checked": checked, "same_prompt_ids": same}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch
    from llama_cpp import Llama

    from genqa.data.rows import load_rows
    from genqa.export_check import ExportCheck
    from genqa.hardware import cpu_info
    from genqa.run_dir import load_run
    from genqa.scoring.task_metrics import task_metrics

    torch.set_num_threads(args.threads)
    qa, sft, _ = load_run(args.merged, ["--use_cpu", "true"])
    setup = ExportCheck.load(Path(args.merged), qa, sft, 1)
    encoder, task = setup.encoder, setup.encoder.task
    new_tokens = args.max_new_tokens or task.answer_budget
    rows, _ = load_rows(task, args.data, args.split, limit=args.limit)
    encoded = [encoder.encode_prompt(r, new_tokens) for r in rows]
    prompts, cut = [e[0] for e in encoded], [e[1] for e in encoded]

    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(args.out_dir or tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        theirs_raw, genqa_seconds = genqa_side(args, out_dir, new_tokens)

    start = time.perf_counter()
    llm = Llama(model_path=args.gguf, n_ctx=max(len(p) for p in prompts) + new_tokens + 8, n_threads=args.threads,
                n_threads_batch=args.threads, n_batch=512, verbose=False)
    load_seconds = time.perf_counter() - start
    template = chat_template_check(llm, encoder, rows, prompts, cut)
    raw: dict[str, str] = {}
    generated = 0
    start = time.perf_counter()
    for row, ids in zip(rows, prompts, strict=True):
        llm.reset()
        out = llm.create_completion(prompt=ids, max_tokens=new_tokens, temperature=0.0, top_k=1, top_p=1.0,
                                    min_p=0.0, repeat_penalty=1.0)
        raw[row["id"]] = out["choices"][0]["text"]
        generated += out["usage"]["completion_tokens"]
    llama_seconds = time.perf_counter() - start

    def scored(answers_raw: dict[str, str]) -> dict[str, Any]:
        answers = {r["id"]: task.read_answer(r, answers_raw.get(r["id"], ""), "generate")[0] for r in rows}
        return task_metrics(task, rows, answers, args.lang)

    ids = [r["id"] for r in rows]
    agree = sum(raw[i].strip() == theirs_raw.get(i, "").strip() for i in ids)
    result = {
        "bench": "llama_cpp_agreement", "merged": args.merged, "gguf": args.gguf,
        "gguf_mib": round(Path(args.gguf).stat().st_size / 2**20, 1), "data": args.data, "rows": len(rows),
        "rows_context_cut": sum(cut), "max_new_tokens": new_tokens, "threads": args.threads,
        "cpu": cpu_info(), "same_answer_text": agree,
        "genqa_predict": {**scored(theirs_raw), "wall_seconds_with_load": round(genqa_seconds, 1),
                          "batch_size": args.batch_size},
        "llama_cpp": {**scored(raw), "load_seconds": round(load_seconds, 2), "seconds": round(llama_seconds, 1),
                      "prompt_tokens": sum(map(len, prompts)), "tokens_generated": generated,
                      "generated_tokens_per_s": round(generated / llama_seconds, 1),
                      "rows_per_s": round(len(rows) / llama_seconds, 2)},
        "chat_template": template,
        "differing_examples": [{"id": i, "genqa": theirs_raw.get(i), "llama_cpp": raw[i]}
                               for i in ids if raw[i].strip() != theirs_raw.get(i, "").strip()][:5],
    }
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
