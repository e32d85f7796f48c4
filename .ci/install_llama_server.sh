#!/usr/bin/env bash
# Install llama.cpp's OpenAI-compatible server (used by the judge tests) only
# when it is missing: the build compiles llama.cpp from source (~5+ min on 2 cores).
set -euo pipefail
PY="${PYTHON:-python}"
if "$PY" -c "import llama_cpp.server" 2>/dev/null; then
  echo "llama_cpp.server already installed"
  exit 0
fi
# Portable CPU build; -j follows the machine's cores.
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
"$PY" -m pip install --no-cache-dir "llama-cpp-python[server]"
"$PY" -c "import llama_cpp.server; print('llama_cpp.server OK')"
