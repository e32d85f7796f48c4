"""ray.reuse_workers: a finished trial's worker process runs the next trial (no process start, imports
kept). A trial in a reused worker must train exactly as in a fresh one, and its memory must not carry
the previous trial's model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import read_csv, run_sweep

pytestmark = pytest.mark.slow


def trials(run: Path) -> list[dict]:
    """The trials' last reports (lora.r, eval_loss, pid, rss_mb, peak_rss_mb) in grid order."""
    out = []
    for r in sorted(read_csv(run / "results.csv"), key=lambda row: row["trial_id"]):  # ids count up in grid order
        assert r["status"] == "TERMINATED", r
        history = (run / "trials" / r["trial_id"] / "metrics.jsonl").read_text().splitlines()
        out.append({**json.loads(history[-1]), "r": int(r["config/lora.r"])})
    return out


def test_a_reused_worker_trains_like_a_fresh_process(tmp_path):
    # The same sequential grid with workers reused (the default), then with a fresh process each; the reused
    # worker runs the r=4 trial twice, so its memory can be compared with itself under the same load.
    common = ["sweeps/smoke.yaml", f"output.dir={tmp_path}", "--no-report", "wandb.enabled=false",
              "search.algorithm=grid", "search.num_samples=1", "search.max_concurrent=1", "scheduler.type=fifo",
              "train.evals_per_epoch=1"]
    for name, reuse, ranks in (("reused", "true", "[8, 4, 4]"), ("fresh", "false", "[8, 4]")):
        proc = run_sweep(*common, f"search.space={{lora.r: {{grid: {ranks}}}, lora.alpha: {{tie: lora.r, times: 2}}}}",
                         f"name={name}", f"ray.reuse_workers={reuse}")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reused, fresh = trials(tmp_path / "reused"), trials(tmp_path / "fresh")
    assert [t["r"] for t in reused] == [8, 4, 4] and [t["r"] for t in fresh] == [8, 4]

    assert len({t["pid"] for t in reused}) == 1, "one worker process ran every trial"
    assert fresh[0]["pid"] != fresh[1]["pid"], "ray.reuse_workers=false: a process per trial"
    alone = {t["r"]: t for t in fresh}
    for t in reused:  # nothing of an earlier trial (RNG, LoRA, optimizer, compiled graphs) leaks into the next
        assert t["eval_loss"] == pytest.approx(alone[t["r"]]["eval_loss"], abs=1e-5), t
        assert t["train_loss"] == pytest.approx(alone[t["r"]]["train_loss"], abs=1e-5), t
    # Memory, compared within the one process (another process's peak moves by a few hundred MB under load):
    # the second identical trial peaks where the first did, so no trial keeps the one before it (a kept
    # model is ~0.5 GB in fp32).
    second, third = reused[1], reused[2]
    assert third["peak_rss_mb"] < second["peak_rss_mb"] + 300, (second, third)
    assert third["rss_mb"] < second["rss_mb"] + 300, (second, third)
