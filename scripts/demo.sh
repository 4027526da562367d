#!/usr/bin/env bash
# Offline end-to-end demo on the bundled tiny data and a tiny model genqa builds itself (a pipeline check, not a
# useful model): train (LoRA) -> merge (checked) -> generate -> Kaggle CSV + metrics, for two tasks:
#   1. Chinese MCQ answering (Kaggle xlsx layout) -> runs/demo/zh_mcq/submission.csv (ID,Answer) + accuracy
#   2. generative extractive QA, SQuAD 2.0 layout -> runs/demo/squad/predictions.json + official EM/F1
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
OUT=runs/demo
rm -rf "$OUT"   # the demo's own folder: every run starts fresh
LAUNCH=(.venv/bin/accelerate launch --config_file accelerate_configs/single_process.yaml -m genqa.sft)

echo "== 1/2 Chinese MCQ (xlsx) -> Kaggle CSV"
"${LAUNCH[@]}" recipes/tiny/mcq.yaml --output_dir $OUT/zh_mcq/run --max_steps 30
$PY -m genqa.merge --adapter $OUT/zh_mcq/run --out $OUT/zh_mcq/merged
$PY -m genqa.generate --base $OUT/zh_mcq/merged --data data/tiny/zh_mcq_test.xlsx --id_column 題號 \
    --out $OUT/zh_mcq/submission.csv
$PY -m genqa.generate --base $OUT/zh_mcq/merged --data data/tiny/zh_mcq.xlsx --out $OUT/zh_mcq/labelled.csv
$PY -m genqa.evaluate --task mcq --data data/tiny/zh_mcq.xlsx --id_column ID --gold_column 正確答案 \
    --predictions $OUT/zh_mcq/labelled.csv --answer_column Answer

echo "== 2/2 SQuAD 2.0 layout, generative extractive QA"
"${LAUNCH[@]}" recipes/tiny/extractive.yaml --output_dir $OUT/squad/run --max_steps 30
$PY -m genqa.merge --adapter $OUT/squad/run --out $OUT/squad/merged
$PY -m genqa.generate --base $OUT/squad/merged --data data/tiny/squad_tiny.json --out $OUT/squad/predictions.json
$PY -m genqa.evaluate --data data/tiny/squad_tiny.json --predictions $OUT/squad/predictions.json

echo
echo "Demo finished. Submission: $OUT/zh_mcq/submission.csv"
head -4 $OUT/zh_mcq/submission.csv
echo "(tiny offline model: the scores above check the pipeline, not a model's quality)"
