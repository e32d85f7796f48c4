"""The time a kill -9 of the driver costs: the same tiny sweep uninterrupted, and killed once then resumed.

    python bench/bench_resume.py [--repeat 1] [--out /tmp/bench_resume]

The sweep is the one tests/test_reliability.py kills: sweeps/smoke.yaml on 8 examples (4 reports per
trial), Optuna, 3 trials, 2 at a time, FIFO, no W&B, no report. The killed run is SIGKILLed (the whole
process group, its Ray included) as soon as one trial has finished and another is half-way (2 of 4
reports), then `--resume` is run at once. Printed per repeat: the uninterrupted wall time, the killed
run's wall time before the kill and the resume's wall time, and the difference (= time lost). Run
alternately in one process so that both see the same machine load.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = ["data.train=alpaca/alpaca_en_demo.json", "data.eval_size=4", "selection.n=8", "train.batch_size=2",
        "train.max_seq_len=128", "wandb.enabled=false", "scheduler.type=fifo", "--no-report"]


def sweep(out: Path, name: str, *extra: str, kill_when_half_way: bool = False) -> float:
    cmd = [sys.executable, "-m", "harness.sweep", "sweeps/smoke.yaml", f"output.dir={out}", f"name={name}",
           *TINY, *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    run_dir = out / name
    while proc.poll() is None:
        if kill_when_half_way and _half_way(run_dir):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return time.perf_counter() - t0
        time.sleep(0.2)
    if proc.returncode != 0:
        sys.exit(f"sweep failed (rc {proc.returncode}): {' '.join(cmd)}")
    return time.perf_counter() - t0


def _half_way(run_dir: Path) -> bool:
    path = run_dir / "results.csv"
    if not path.exists():
        return False
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))

    def reports(trial_id: str) -> int:
        h = run_dir / "trials" / trial_id / "metrics.jsonl"
        return len([x for x in h.read_text().splitlines() if x.strip()]) if h.exists() else 0

    return any(r["status"] == "TERMINATED" for r in rows) and any(
        r["status"] == "RUNNING" and 2 <= reports(r["trial_id"]) < 4 for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", default="/tmp/bench_resume")
    args = ap.parse_args()
    out = Path(args.out) / str(int(time.time()))
    results = []
    for i in range(args.repeat):
        plain = sweep(out, f"plain{i}")
        before_kill = sweep(out, f"killed{i}", kill_when_half_way=True)
        resume = sweep(out, f"killed{i}", "--resume")
        with open(out / f"killed{i}" / "results.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        resumed = [r["trial_id"] for r in rows if r.get("resumed_from_report")]
        results.append((plain, before_kill, resume, len(rows), resumed))
        print(f"repeat {i + 1}: uninterrupted {plain:.0f} s; killed after {before_kill:.0f} s + resume "
              f"{resume:.0f} s = {before_kill + resume:.0f} s; lost {before_kill + resume - plain:+.0f} s "
              f"({(before_kill + resume) / plain - 1:+.0%}); {len(rows)} trials, resumed from a checkpoint: "
              f"{', '.join(resumed) or 'none'}")
    if len(results) > 1:
        lost = [b + r - p for p, b, r, _, _ in results]
        print(f"mean time lost over {len(results)} repeats: {sum(lost) / len(lost):+.0f} s")


if __name__ == "__main__":
    main()
