"""ray.reuse_workers: a finished trial's worker process runs the next trial (no process start, imports
kept). A trial in a reused worker must train exactly as in a fresh one, and its memory must not carry
the previous trial's model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import read_csv, run_sweep

pytestmark = pytest.mark.slow


def trials(run: Path) -> dict[int, dict]:
    """lora.r -> the trial's last report (eval_loss, pid, rss_mb, peak_rss_mb)."""
    out = {}
    for r in read_csv(run / "results.csv"):
        assert r["status"] == "TERMINATED", r
        history = (run / "trials" / r["trial_id"] / "metrics.jsonl").read_text().splitlines()
        out[int(r["config/lora.r"])] = json.loads(history[-1])
    return out


def test_a_reused_worker_trains_like_a_fresh_process(tmp_path):
    # The same sequential 2-trial grid twice: workers reused (the default), then a fresh process each.
    common = ["sweeps/smoke.yaml", f"output.dir={tmp_path}", "--no-report", "wandb.enabled=false",
              "search.algorithm=grid", "search.num_samples=1", "search.max_concurrent=1", "scheduler.type=fifo",
              "search.space={lora.r: {grid: [8, 4]}, lora.alpha: {tie: lora.r, times: 2}}",
              "train.evals_per_epoch=1"]
    for name, reuse in (("reused", "true"), ("fresh", "false")):
        proc = run_sweep(*common, f"name={name}", f"ray.reuse_workers={reuse}")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reused, fresh = trials(tmp_path / "reused"), trials(tmp_path / "fresh")

    assert reused[8]["pid"] == reused[4]["pid"], "one worker process ran both trials"
    assert fresh[8]["pid"] != fresh[4]["pid"], "ray.reuse_workers=false: a process per trial"
    for r in (8, 4):  # nothing of the first trial (RNG, LoRA, optimizer, compiled graphs) leaks into the second
        assert reused[r]["eval_loss"] == pytest.approx(fresh[r]["eval_loss"], abs=1e-5), r
        assert reused[r]["train_loss"] == pytest.approx(fresh[r]["train_loss"], abs=1e-5), r
    # The second trial's peak is its own (reset at its start) and its process did not keep the first
    # trial's model (~0.5 GB in fp32) on top of its own.
    second, alone = reused[4], fresh[4]
    assert second["peak_rss_mb"] < alone["peak_rss_mb"] + 300, (second, alone)
    assert second["rss_mb"] < reused[8]["rss_mb"] + 300, (second, reused[8])
