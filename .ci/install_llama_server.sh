#!/usr/bin/env bash
# Install llama.cpp's OpenAI-compatible server (used by the judge tests) only
# when it is missing: the build compiles llama.cpp from source (~10 min on 2 cores; 9 min 49 s measured).
set -euo pipefail
PY="${PYTHON:-python}"
VERSION=0.3.36  # pinned: each llama-cpp-python release bundles another llama.cpp (and its server's behaviour)
if "$PY" -c "import llama_cpp.server, llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$VERSION')" 2>/dev/null; then
  echo "llama_cpp.server $VERSION already installed"
  exit 0
fi
# Portable CPU build; -j follows the machine's cores.
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
"$PY" -m pip install --no-cache-dir "llama-cpp-python[server]==$VERSION"
"$PY" -c "import llama_cpp.server; print('llama_cpp.server OK')"
