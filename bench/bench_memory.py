"""Memory across a sweep of identical trials: does anything creep from trial to trial?

    python bench/bench_memory.py [--trials 10] [--concurrent 2] [--out /tmp/bench_memory]

Runs sweeps/smoke.yaml as a grid of --trials trials that differ only in train.seed (same data size,
same model, same number of steps; FIFO, no W&B, no report) and prints, per trial in start order:
the trial worker's peak RSS (`peak_rss_mb`, reported by the trial itself) and its RSS at its last
report, and the driver's RSS when the trial finished; then the slope of each over the trials
(MB per trial; flat = no leak) and the peak RSS of the whole process tree (driver + Ray + workers).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent


def slope(ys: list[float]) -> float:
    xs = list(range(len(ys)))
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / max(sum((x - mx) ** 2 for x in xs), 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--concurrent", type=int, default=2)
    ap.add_argument("--out", default="/tmp/bench_memory")
    args = ap.parse_args()

    seeds = list(range(args.trials))
    cmd = [sys.executable, "-m", "harness.sweep", "sweeps/smoke.yaml", f"output.dir={args.out}",
           f"name=memory_{int(time.time())}", "--no-report", "wandb.enabled=false", "search.algorithm=grid",
           "search.num_samples=1", "search.space={}", f"search.seeds={seeds}", "scheduler.type=fifo",
           f"search.max_concurrent={args.concurrent}"]
    run_dir = Path(args.out) / cmd[5].split("=", 1)[1]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    driver = psutil.Process(proc.pid)
    samples: list[tuple[float, float, float]] = []  # (time, driver MB, whole tree MB)

    def sample() -> None:
        while proc.poll() is None:
            try:
                tree = [driver, *driver.children(recursive=True)]
                rss = [p.memory_info().rss for p in tree if p.is_running()]
                samples.append((time.time(), driver.memory_info().rss / 2**20, sum(rss) / 2**20))
            except psutil.Error:
                pass
            time.sleep(0.5)

    t0 = time.time()
    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    proc.wait()
    watcher.join()
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"sweep failed (rc {proc.returncode}); rerun: {' '.join(cmd)}")

    with open(run_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    trials = []
    for r in rows:
        history = [json.loads(x) for x in (run_dir / "trials" / r["trial_id"] / "metrics.jsonl").read_text().split("\n")
                   if x.strip()]
        end = history[-1]["timestamp"]
        driver_at_end = min(samples, key=lambda s: abs(s[0] - end))[1] if samples else float("nan")
        trials.append({"trial": r["trial_id"], "seed": r["config/train.seed"], "start": history[0]["timestamp"],
                       "peak": float(r["peak_rss_mb"]), "last": float(r["rss_mb"]), "driver": driver_at_end})
    trials.sort(key=lambda t: (t["start"], t["trial"]))

    print(f"{len(trials)} trials of the same size, {args.concurrent} at a time, in {wall:.0f} s "
          f"(machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB)")
    print(f"{'#':>3} {'trial':<14} {'seed':>4} {'worker peak MB':>15} {'worker last MB':>15} {'driver MB':>10}")
    for i, t in enumerate(trials, 1):
        print(f"{i:>3} {t['trial']:<14} {t['seed']:>4} {t['peak']:>15.0f} {t['last']:>15.0f} {t['driver']:>10.0f}")
    for key, what in (("peak", "worker peak RSS"), ("last", "worker RSS at last report"), ("driver", "driver RSS")):
        ys = [t[key] for t in trials]
        print(f"{what}: min {min(ys):.0f} MB, max {max(ys):.0f} MB, slope {slope(ys):+.1f} MB/trial")
    if samples:
        print(f"whole process tree (driver + Ray + workers): peak {max(s[2] for s in samples):.0f} MB")


if __name__ == "__main__":
    main()
