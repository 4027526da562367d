#!/usr/bin/env bash
# Build llama-cpp-python (the llama.cpp library and its Python bindings) from source for this CPU, into the active
# Python environment, for `benchmarks/llama_cpp_agreement.py`. PyPI has no CPU wheel of it: pip compiles llama.cpp
# (4.4-4.9 min on 2 cores here). Not needed by genqa itself: `genqa export` writes GGUF with the `gguf` package.
#
# On CPUs with AMX (Sapphire Rapids and later) llama.cpp 0.3.36's AMX kernels crashed here with a segfault in
# `ggml_backend_amx_mul_mat` on the first decode (Gemma 3 Q4_K_M and q8_0 alike; llama.cpp issue #20824), so on such a
# CPU the build names the instruction sets it uses and leaves AMX out.
#
#   bash scripts/install_llama_cpp.sh            # uses .venv/bin/pip when present, else pip
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=pip
[ -x .venv/bin/pip ] && PIP=.venv/bin/pip
VERSION=0.3.36
ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF"
if grep -q ' amx_' /proc/cpuinfo 2>/dev/null; then
  flags=$(grep -m1 '^flags' /proc/cpuinfo)
  has() { [[ " $flags " == *" $1 "* ]] && echo ON || echo OFF; }
  ARGS="$ARGS -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma) -DGGML_F16C=$(has f16c)"
  ARGS="$ARGS -DGGML_AVX_VNNI=$(has avx_vnni) -DGGML_AVX512=$(has avx512f) -DGGML_AVX512_VBMI=$(has avx512vbmi)"
  ARGS="$ARGS -DGGML_AVX512_VNNI=$(has avx512_vnni) -DGGML_AVX512_BF16=$(has avx512_bf16)"
  ARGS="$ARGS -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  echo "AMX CPU: building llama.cpp without its AMX kernels (llama.cpp issue #20824)"
else
  ARGS="$ARGS -DGGML_NATIVE=ON"
fi
start=$(date +%s)
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) CMAKE_ARGS="$ARGS" "$PIP" install --no-binary llama-cpp-python \
  "llama-cpp-python==$VERSION" diskcache
echo "llama-cpp-python $VERSION built in $(( $(date +%s) - start )) s"
