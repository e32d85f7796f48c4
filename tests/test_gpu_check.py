"""bench/gpu_check.sh where there is no GPU: it says so and runs nothing (exit 0); an environment that
cannot import torch is named as not prepared (exit 2). Its GPU steps run on a GPU machine
(docs/performance.md); GPU_CHECK_ALLOW_CPU=1 runs them tiny on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import REPO

SCRIPT = REPO / "bench" / "gpu_check.sh"


def run(tmp_path, **env: str) -> subprocess.CompletedProcess:
    out = {"GPU_CHECK_DIR": str(tmp_path / "check"), "OUT": str(tmp_path / "out")}
    return subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "", **out, **env})


def test_without_cuda_it_says_so_and_runs_nothing(tmp_path):
    proc = run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing was run"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output directory, nothing copied to $OUT
    before = set((REPO / "bench").glob("results/gpu_check-*"))
    assert run(tmp_path, GPU_CHECK_DIR="").returncode == 0  # the default directory is not made either
    assert set((REPO / "bench").glob("results/gpu_check-*")) == before


def test_an_environment_without_torch_is_not_prepared(tmp_path):
    bare = tmp_path / "python"
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")  # -S: no site-packages, so no torch
    bare.chmod(0o755)
    proc = run(tmp_path, PYTHON=str(bare))
    assert proc.returncode == 2
    assert "cannot import torch; prepare the environment" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["python"]
