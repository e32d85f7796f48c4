"""Trial throughput of one sweep on one node and on a two-node Ray cluster, all on this machine.

    python bench/bench_cluster.py [--trials 4] [--examples 16] [--repeats 1] [--setups local,1node,2nodes,ddp]

The nodes share this machine's cores, so this measures what running through a cluster costs (joining,
placing trials on another raylet, token authentication, a file:// URI storage), not added hardware.
Up to four setups in one run, each the same grid of single-process trials (1 CPU, 2 at a time) unless noted:
  local        a private local Ray instance (ray.init, 2 CPUs): the default
  1node        a one-node `ray start` cluster with 2 CPUs, joined with --address
  2nodes       head + worker node, 1 CPU each, joined with --address (trials spread over both)
  ddp          on the 2 nodes, the same trials as 2-worker data-parallel trials (Ray Train + gloo, one
               worker per node; grad_accum 1 x 2 workers = the same optimizer steps), one at a time
Prints wall seconds of Tuner.fit and of the whole command, trials per minute, and ratios to `local`.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from ray_nodes import ray_cluster  # noqa: E402


def sweep(args: argparse.Namespace, out: Path, name: str, env: dict[str, str], *extra: str) -> tuple[float, float]:
    """(Tuner.fit seconds, command seconds) of one sweep."""
    ranks = ", ".join(str(4 * (i + 1)) for i in range(args.trials))
    cmd = [sys.executable, "-m", "harness.sweep", "sweeps/smoke.yaml", "--no-report", "wandb.enabled=false",
           f"name={name}", f"output.dir=file://{out}", f"output.mirror={out}/mirror", f"selection.n={args.examples}",
           "data.eval_size=4", "train.max_seq_len=64", "train.batch_size=2", "train.evals_per_epoch=2",
           "search.algorithm=grid", "search.num_samples=1", "search.max_concurrent=2", "scheduler.type=fifo",
           "resources.cpus_per_trial=1", f"search.space={{lora.r: {{grid: [{ranks}]}}}}", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    total = time.perf_counter() - t0
    found = re.search(r"(\d+) trials in (\d+) s", proc.stdout)
    if proc.returncode != 0 or not found:
        sys.exit(f"{name} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return float(found.group(2)), total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--setups", default="local,1node,2nodes,ddp", help="comma-separated, from the list above")
    args = ap.parse_args()
    setups = args.setups.split(",")
    base_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            out = Path(tmp) / str(r)
            if "local" in setups:
                results.setdefault("local", []).append(sweep(args, out, "local", base_env))
            if "1node" in setups:
                with ray_cluster({"head": 2}) as one:
                    results.setdefault("1node", []).append(
                        sweep(args, out, "one", one.driver_env(base_env), "--address", one.address))
            if "2nodes" in setups or "ddp" in setups:
                with ray_cluster({"head": 1, "worker": 1}) as two:
                    env = two.driver_env(base_env)
                    if "2nodes" in setups:
                        results.setdefault("2nodes", []).append(
                            sweep(args, out, "two", env, "--address", two.address))
                    if "ddp" in setups:
                        results.setdefault("ddp", []).append(sweep(
                            args, out, "ddp", env, "--address", two.address, "resources.workers_per_trial=2",
                            "resources.cpus_per_trial=2", "train.batch_size=1", "train.grad_accum=1"))
    ref = min(f for f, _ in next(iter(results.values())))
    print(f"{args.trials} trials x {args.examples} examples, best of {args.repeats}; this machine: "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'setup':<12} {'fit s':>7} {'command s':>10} {'trials/min':>11} {'fit vs ' + setups[0]:>13}")
    for setup, runs in results.items():
        fit, total = min(runs)
        print(f"{setup:<12} {fit:>7.0f} {total:>10.0f} {args.trials / fit * 60:>11.2f} {fit / ref:>12.2f}x")


if __name__ == "__main__":
    main()
