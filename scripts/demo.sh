#!/usr/bin/env bash
# Offline end-to-end demo on the bundled tiny data and a tiny model genqa builds itself (a pipeline check, not a
# useful model): train (LoRA) -> merge (checked) -> generate -> Kaggle CSV + metrics, for two tasks:
#   1. Chinese MCQ answering (Kaggle xlsx layout) -> runs/demo/zh_mcq/submission.csv (ID,Answer) + accuracy
#   2. generative extractive QA, SQuAD 2.0 layout -> runs/demo/squad/predictions.json + official EM/F1
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
GENQA=.venv/bin/genqa
OUT=runs/demo
rm -rf "$OUT"   # the demo's own folder: every run starts fresh

echo "== 1/2 Chinese MCQ (xlsx) -> Kaggle CSV"
$GENQA preview recipes/tiny/mcq.yaml -n 1          # what the model sees: trained tokens marked
$GENQA train recipes/tiny/mcq.yaml --output_dir $OUT/zh_mcq/run --max_steps 30 \
    --eval_strategy steps --eval_steps 10 --generation_eval_samples 3    # loss + task metric in training_loss.png
$GENQA merge --adapter $OUT/zh_mcq/run --out $OUT/zh_mcq/merged
$GENQA predict --base $OUT/zh_mcq/merged --data data/tiny/zh_mcq_test.xlsx --id_column 題號 \
    --out $OUT/zh_mcq/submission.csv
$GENQA predict --base $OUT/zh_mcq/merged --data data/tiny/zh_mcq.xlsx --out $OUT/zh_mcq/labelled.csv
$GENQA eval --task mcq --data data/tiny/zh_mcq.xlsx --id_column ID --gold_column 正確答案 \
    --predictions $OUT/zh_mcq/labelled.csv --answer_column Answer

echo "== 2/2 SQuAD 2.0 layout, generative extractive QA"
$GENQA train recipes/tiny/extractive.yaml --output_dir $OUT/squad/run --max_steps 30
$GENQA merge --adapter $OUT/squad/run --out $OUT/squad/merged
$GENQA predict --base $OUT/squad/merged --data data/tiny/squad_tiny.json --out $OUT/squad/predictions.json
$GENQA eval --data data/tiny/squad_tiny.json --predictions $OUT/squad/predictions.json

echo
echo "Demo finished. Submission: $OUT/zh_mcq/submission.csv; run folder (card, loss plot, logs): $OUT/zh_mcq/run"
head -4 $OUT/zh_mcq/submission.csv
echo "(tiny offline model: the scores above check the pipeline, not a model's quality)"
