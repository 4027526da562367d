#!/bin/bash
# A new user's walk through every Gemma recipe in recipes/cpu/*_gemma.yaml with the smallest budget: genqa train
# (2 steps) -> genqa merge -> genqa predict (8 rows of the seed's own test file) -> genqa eval. It checks that the
# commands the recipes name run offline end to end, not quality (benchmarks/real_model_quality.py measures that).
#   bash benchmarks/gemma_recipe_walk.sh [OUT_DIR]        (after scripts/setup.sh; needs ../shared/data)
# Prints each command and its exit status; exits non-zero if any failed.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-runs/walk}
G=.venv/bin/genqa
D=../shared/data
failed=0
step() { echo "\$ $*"; "$@"; local rc=$?; echo "[rc=$rc]"; [ $rc -eq 0 ] || failed=$((failed + 1)); }
walk() {  # name recipe data out [predict flags...]
  local name=$1 recipe=recipes/cpu/$2 data=$3 out=$4; shift 4
  local W=$OUT/$name
  rm -rf "$W"; mkdir -p "$W"
  echo "=== $name $(date +%T)"
  step $G train "$recipe" --output_dir "$W/run" --max_steps 2 --save_strategy no
  step $G merge --adapter "$W/run" --out "$W/merged"
  step $G predict --base "$W/merged" --data "$data" --limit 8 --out "$W/$out" --no_progress "$@"
}
walk viquad_v1 viquad_v1_gemma.yaml $D/viquad/uit-viquad-v1.0-test.json test.json
step $G eval --data $D/viquad/uit-viquad-v1.0-test.json --predictions "$OUT/viquad_v1/test.json" --lang vi --subset predicted
walk viquad viquad_gemma.yaml $D/viquad/uit-viquad-v2.0-vlsp2021-public-test.json test.json
step $G eval --data $D/viquad/uit-viquad-v2.0-vlsp2021-public-test.json --predictions "$OUT/viquad/test.json" --lang vi \
  --subset predicted
walk squad_v1 squad_v1_gemma.yaml $D/squad/dev-v1.1.json dev.json
step $G eval --data $D/squad/dev-v1.1.json --predictions "$OUT/squad_v1/dev.json" --subset predicted
walk squad squad_gemma.yaml $D/squad/dev-v2.0.json dev.json
step $G eval --data $D/squad/dev-v2.0.json --predictions "$OUT/squad/dev.json" --subset predicted
walk mcq_zh mcq_zh_gemma.yaml $D/c3/c3-m-test.json test.csv
step $G eval --task mcq --recipe "$OUT/mcq_zh/merged/genqa_recipe.yaml" --data $D/c3/c3-m-test.json \
  --predictions "$OUT/mcq_zh/test.csv" --subset predicted
walk kaggle_zh kaggle_zh_gemma.yaml $D/kaggle_zh_mcq/AI1000.xlsx submission.csv --id_column 題號  # unlabelled: CSV only
walk vi_exam vi_exam_gemma.yaml $D/vnhsge/History/MET_His_IE_2023.json his2023.csv
step $G eval --task mcq --recipe "$OUT/vi_exam/merged/genqa_recipe.yaml" --data $D/vnhsge/History/MET_His_IE_2023.json \
  --predictions "$OUT/vi_exam/his2023.csv" --subset predicted
walk mcq_gen mcq_gen_gemma.yaml $D/vnhsge/Geography/MET_Geo_IE_2023.json geo2023.csv
step $G eval --task mcq_generation --lang vi --predictions "$OUT/mcq_gen/geo2023.csv"
echo "=== done $(date +%T): $failed failed"
[ $failed -eq 0 ]
