"""Sweeps on a real two-node Ray cluster on this machine (tests/ray_nodes.py): a head and a worker node,
each a separate `ray start` with one CPU and a custom resource (`head_node`, `worker_node`) so that the
node of each trial is known; token authentication on. Sweeps join with --address host:port,
`--address auto` and RAY_ADDRESS. The cluster is torn down in all cases and no process of it may survive.
One CPU per node and per trial worker keeps at most two model-holding processes alive at any time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO, read_csv, run_sweep, sweep_env
from ray_nodes import Cluster, ray_cluster

pytestmark = pytest.mark.slow

# 8 examples of at most 64 tokens (2 held out), fp32, no dropout: small, and two trials of the same
# optimizer steps are comparable. One CPU per node and per trial: one torch thread per process (two
# threads on a shared core crawl).
TINY = ["sweeps/smoke.yaml", "--no-report", "wandb.enabled=false", "selection.n=8", "data.eval_size=2",
        "train.max_seq_len=64", "train.bf16=off", "lora.dropout=0", "search.algorithm=grid",
        "search.num_samples=1", "search.max_concurrent=2", "scheduler.type=fifo", "resources.cpus_per_trial=1"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with ray_cluster({"head": 1, "worker": 1}) as c:
        yield c


# Two single-process trials (one per node: each node has one CPU), then one data-parallel trial whose two
# workers need a CPU each, so it waits for both and spans both nodes. Same optimizer steps in all three:
# grad_accum 2 x 1 worker = grad_accum 1 x 2 workers. 6 examples = 3 micro-batches: the second step has
# one, so the second worker runs a blank one (the uneven end of an epoch).
SPREAD = ["name=spread", "selection.n=6", "train.batch_size=2", "train.evals_per_epoch=2",
          "search.space={resources.workers_per_trial: {grid: [1, 1, 2]}, "
          "resources.cpus_per_trial: {tie: resources.workers_per_trial}, "
          "train.grad_accum: {tie: resources.workers_per_trial, times: -1, plus: 3}}"]


@pytest.fixture(scope="module")
def spread(cluster, tmp_path_factory) -> dict[str, Path]:
    """One sweep through --address with its storage at a file:// URI (a bucket as far as the code knows)."""
    tmp = tmp_path_factory.mktemp("spread")
    t0 = time.monotonic()
    proc = run_sweep(*TINY, *SPREAD, f"output.dir=file://{tmp}/bucket", f"output.mirror={tmp}/mirror",
                     "--address", cluster.address, env=cluster.driver_env(sweep_env()), timeout=900)
    (tmp / "driver.log").write_text(proc.stdout + proc.stderr + f"\nwall {time.monotonic() - t0:.0f} s\n")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return {"bucket": tmp / "bucket" / "spread", "mirror": tmp / "mirror" / "spread", "log": tmp / "driver.log"}


def test_trials_run_on_both_nodes_one_on_two_gloo_workers(cluster, spread):
    rows = read_csv(spread["mirror"] / "results.csv")
    assert len(rows) == 3 and all(r["status"] == "TERMINATED" for r in rows), rows
    ones = [r for r in rows if r["world_size"] == "1"]
    two = next(r for r in rows if r["world_size"] == "2")
    # One single-process trial on each node.
    assert sorted(r["node_id"] for r in ones) == sorted(cluster.node_ids.values())
    assert [r["config/train.grad_accum"] for r in ones] == ["2", "2"] and two["config/train.grad_accum"] == "1"
    # The same configuration gives the same losses on either node ...
    assert ones[0]["eval_loss"] == ones[1]["eval_loss"] and float(ones[0]["eval_loss"]) > 0
    # ... and with two DDP workers taking half the micro-batches each: the gradients were averaged
    # across the workers into the very same optimizer steps.
    assert float(two["eval_loss"]) == pytest.approx(float(ones[0]["eval_loss"]), rel=1e-4)
    assert float(two["train_loss"]) == pytest.approx(float(ones[0]["train_loss"]), rel=1e-4)
    assert two["tokens_seen"] == ones[0]["tokens_seen"]
    # The console (piped: a line per event) named the node of each trial's reports.
    log = spread["log"].read_text()
    reports = [line for line in log.splitlines() if " report " in line and "tok/s on " in line]
    assert sum(any(f"/{node[:6]}" in line for line in reports) for node in cluster.node_ids.values()) == 2
    assert "Reporting training result" not in log  # Ray Train's whole-report INFO lines stay in its workers


def test_results_adapters_and_sweep_state_land_in_uri_storage(spread):
    bucket, mirror = spread["bucket"], spread["mirror"]
    assert (bucket / "results.csv").read_text() == (mirror / "results.csv").read_text()
    assert (bucket / "sweep.yaml").exists() and (bucket / "best.yaml").exists()
    for r in read_csv(mirror / "results.csv"):
        trial = bucket / "trials" / r["trial_id"]
        assert (trial / "adapter" / "adapter_config.json").exists()  # written on its node, uploaded
        assert (trial / "selected_ids.json").exists() and (trial / "metrics.jsonl").exists()
        if r["world_size"] == "2":  # the Ray Train run of the data-parallel trial, with its checkpoint
            assert any((bucket / "train" / r["trial_id"]).glob("checkpoint_*/state.pt"))
    assert any((bucket / "tune").glob("experiment_state-*.json"))  # what --resume restores from
    assert not any(mirror.glob("trials/*/adapter")), "adapters stay in the storage, not the driver's copy"


def test_resume_from_the_uri_on_a_machine_without_the_files(cluster, spread, tmp_path):
    # A driver elsewhere: an empty local copy, the cluster found with `--address auto`.
    env = cluster.driver_env(sweep_env(), RAY_TMPDIR=str(cluster.nodes['head'].temp_dir.parent))
    proc = run_sweep(
        *TINY, *SPREAD, f"output.dir=file://{spread['bucket'].parent}", f"output.mirror={tmp_path}",
        "--resume", "--address", "auto", env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    before = {r["trial_id"]: r for r in read_csv(spread["mirror"] / "results.csv")}
    after = {r["trial_id"]: r for r in read_csv(tmp_path / "spread" / "results.csv")}
    assert after.keys() == before.keys()
    assert all(after[t]["status"] == "TERMINATED" and after[t]["eval_loss"] == before[t]["eval_loss"] for t in after)
    assert all((tmp_path / "spread" / "trials" / t / "metrics.jsonl").exists() for t in after)


def test_joining_without_the_cluster_token_is_a_one_line_error(cluster, tmp_path):
    env = {k: v for k, v in sweep_env().items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env["RAY_gcs_server_port_wait_time_s"] = "5"  # give up after 5 tries, not 20
    proc = run_sweep(*TINY, "name=noauth", f"output.dir={tmp_path}", "--address", cluster.address, env=env,
                     timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: ray.address: cannot join the Ray cluster at {cluster.address}")
    assert "RAY_AUTH_MODE=token" in last


def test_trials_of_a_dead_worker_node_are_retried_on_the_head(cluster, tmp_path):
    # Last in this file: it kills the worker node, after the first of 4 reports of the trial there.
    mirror = tmp_path / "mirror" / "failover"
    driver = subprocess.Popen(
        [sys.executable, "-m", "harness.sweep", *TINY, "name=failover", f"output.dir=file://{tmp_path}/bucket",
         f"output.mirror={tmp_path}/mirror", "recovery.max_failures=1", "train.batch_size=1", "train.evals_per_epoch=4",
         "search.space={lora.r: {grid: [4, 8]}}"],
        cwd=REPO, env=cluster.driver_env(sweep_env(), RAY_ADDRESS=cluster.address), stdout=open(tmp_path / "driver.log", "w"),
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while True:  # wait for the trial on the worker node to report once
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "no trial reported from the worker node"
            rows = read_csv(mirror / "results.csv") if (mirror / "results.csv").exists() else []
            if any(r["status"] == "RUNNING" and r["node_id"] == cluster.node_ids["worker"] for r in rows):
                break
            time.sleep(1)
        cluster.nodes["worker"].stop()  # the machine dies: raylet, trial process and all
        assert driver.wait(timeout=600) == 0, (tmp_path / "driver.log").read_text()[-4000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    rows = read_csv(mirror / "results.csv")
    assert all(r["status"] == "TERMINATED" for r in rows), rows
    retried = [r for r in rows if r["failures"] == "1"]
    assert len(retried) == 1 and retried[0]["node_id"] == cluster.node_ids["head"]
    history = [json.loads(line) for line in (mirror / "trials" / retried[0]["trial_id"] / "metrics.jsonl")
               .read_text().splitlines()]
    steps = [h["step"] for h in history]
    assert steps == sorted(set(steps)) and steps[-1] == 8  # continued from its checkpoint to the end
