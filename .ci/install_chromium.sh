#!/usr/bin/env bash
# Install a headless Chromium (Debian's `chromium` package) for the optuna-dashboard test, only when missing.
set -euo pipefail
for b in chromium chromium-browser google-chrome; do
  if command -v "$b" >/dev/null; then echo "$b already installed"; exit 0; fi
done
SUDO=""
[[ "$(id -u)" != 0 ]] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
chromium --version
