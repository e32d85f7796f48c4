"""Packed trials under real Ray Tune (resources.pack: 3; docs/DESIGN.md "Packed trials"): the embedded
SmolLM2-135M on 16 Alpaca examples, 4 steps, max_seq_len 64, four trials differing in train.lr, one of them
diverging (lr 1e37). One packed sweep and the same sweep unpacked, shared by the assertions."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import (
    REPO,
    crash_tracebacks,
    history,
    kill_at,
    last_report,
    read_csv,
    run_sweep,
    start_sweep,
    trial_ids,
)

from harness.tuner import PACKED_TRIAL_MEMORY

pytestmark = pytest.mark.slow

LRS = [3e-3, 1e-3, 1e-4, 1e37]
COMMON = ["sweeps/smoke.yaml", "search.algorithm=grid", "search.num_samples=1", "search.max_concurrent=3",
          f"search.space={json.dumps({'train.lr': {'grid': LRS}})}", "train.max_seq_len=64", "lora.dropout=0",
          "train.bf16=off", "wandb.enabled=false", "recovery.max_failures=0", "scheduler.grace_period=1",
          "--no-report"]


def _sweep(root: Path, *extra: str) -> dict[float, dict]:
    proc = run_sweep(*COMMON, f"output.dir={root}", *extra, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = {}
    for row in read_csv(root / "smoke" / "results.csv"):
        reports = history(root / "smoke", row["trial_id"])
        out[float(row["config/train.lr"])] = {"row": row, "reports": {h["report"]: h for h in reports},
                                              "console": proc.stdout}
    return out


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> tuple[dict, dict]:
    root = tmp_path_factory.mktemp("pack")
    return _sweep(root / "packed", "resources.pack=3"), _sweep(root / "alone")


def test_each_packed_trial_reports_what_it_reports_alone(sweeps):
    packed, alone = sweeps
    assert sorted(packed) == sorted(alone) == sorted(LRS)
    compared = 0
    for lr in LRS[:3]:
        for k in set(packed[lr]["reports"]) & set(alone[lr]["reports"]):
            assert packed[lr]["reports"][k]["eval_loss"] == pytest.approx(alone[lr]["reports"][k]["eval_loss"],
                                                                          abs=1e-4), (lr, k)
            assert packed[lr]["reports"][k]["step"] == alone[lr]["reports"][k]["step"]
            compared += 1
    assert compared >= 4  # the first report of each trial at least (ASHA may stop some after it)


def test_the_pack_columns_name_the_pack_and_its_other_members(sweeps):
    packed, alone = sweeps
    rows = {lr: packed[lr]["row"] for lr in LRS[:3]}
    ids = {r["trial_id"] for r in rows.values()}
    for r in rows.values():
        assert r["pack_id"]
        others = set(filter(None, r["packed_with"].split(";")))
        assert r["trial_id"] not in others and others, r
    # the first three trials started together in one pack: each trained with the other two
    first = [r for r in rows.values() if r["pack_id"].endswith("-0")]
    assert len({r["pack_id"] for r in first}) == 1 and len(first) >= 2
    assert all(ids - {r["trial_id"]} <= set(r["packed_with"].split(";")) | {packed[LRS[3]]["row"]["trial_id"]}
               for r in first if r["trial_id"] in ids)
    assert "pack_id" not in alone[LRS[0]]["row"]  # unpacked: the table as before
    for lr in LRS[:3]:  # a member's own process only relays (no torch, no TrainState held): within what it reserves
        for h in packed[lr]["reports"].values():
            assert 0 < h["relay_peak_rss_mb"] < PACKED_TRIAL_MEMORY / 2**20, (lr, h)
    assert " in pack " in packed[LRS[0]]["console"]
    for r in rows.values():  # every checkpoint the pack handed over was taken or deleted
        assert not list(Path(tempfile.gettempdir()).glob(f"harness-pack-{r['pack_id']}-{r['trial_id']}-*")), r


def test_a_diverging_member_fails_alone_and_the_scheduler_stops_members_one_by_one(sweeps):
    packed, _ = sweeps
    nan = packed[LRS[3]]["row"]
    assert nan["status"] == "ERROR" and nan["error_type"] == "FloatingPointError"
    assert "loss became NaN/inf" in nan["error"]
    statuses = [packed[lr]["row"]["status"] for lr in LRS[:3]]
    assert set(statuses) <= {"TERMINATED", "EARLY_STOPPED"} and "TERMINATED" in statuses, statuses
    for lr in LRS[:3]:  # a member stopped early ended at its own report; the others trained to the end
        row = packed[lr]["row"]
        last = max(packed[lr]["reports"])
        assert (row["status"] == "EARLY_STOPPED") == (last < 4), (lr, row["status"], last)


def test_a_killed_packed_sweep_resumes_each_member_where_it_stopped(sweeps, tmp_path):
    """kill -9 of the driver (its Ray and the pack worker with it) while a pack's members are half-way, then
    --resume: each member goes on from its own last checkpoint in a new pack and ends where it ends alone."""
    _, alone = sweeps
    space = json.dumps({"train.lr": {"grid": LRS[:3]}})
    args = [*COMMON[:4], f"search.space={space}", *COMMON[5:-1], "scheduler.type=fifo", "resources.pack=3",
            f"output.dir={tmp_path}", "--no-report"]
    run_dir = tmp_path / "smoke"
    driver = start_sweep(*args, log=tmp_path / "killed.log")
    kill_at(driver, run_dir, lambda: any(last_report(run_dir, t) >= 2 for t in trial_ids(run_dir)))
    at_kill = {t: last_report(run_dir, t) for t in trial_ids(run_dir)}
    assert any(k < 4 for k in at_kill.values()), at_kill
    # Ray saves its state every 10 s or more: made certain here, one half-way trial's checkpoints all came after it
    unlisted = next(t for t, k in sorted(at_kill.items()) if 0 < k < 4)
    saved_before_its_first_checkpoint(run_dir / "tune", unlisted)

    resumed = run_sweep(*args, "--resume", timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert crash_tracebacks(resumed.stdout + resumed.stderr) == []
    assert f"resume: trial {unlisted}: the saved state named none of its checkpoints; it goes on from" in resumed.stdout
    rows = {float(r["config/train.lr"]): r for r in read_csv(run_dir / "results.csv")}
    assert sorted(rows) == sorted(LRS[:3]) and all(r["status"] == "TERMINATED" and r["pack_id"] for r in rows.values())
    after_resume = 0
    for lr, row in rows.items():
        reports = history(run_dir, row["trial_id"])
        assert [h["report"] for h in reports] == [1, 2, 3, 4], (lr, reports)
        if 0 < at_kill.get(row["trial_id"], 0) < 4:  # trained on from a checkpoint, not from the start (its
            assert int(row["resumed_from_report"]) >= 1, row  # first may have come after Ray's last saved state)
        for h in reports:  # the same losses as the uninterrupted trial alone, before and after the kill
            if h["report"] in alone[lr]["reports"]:
                assert h["eval_loss"] == pytest.approx(alone[lr]["reports"][h["report"]]["eval_loss"], abs=1e-4), (lr, h)
                after_resume += h["report"] > at_kill.get(row["trial_id"], 0)
    assert after_resume >= 1, "a report after the resume compared with the trial alone"


def saved_before_its_first_checkpoint(tune_dir: Path, trial_id: str) -> None:
    """Ray's saved state (the one --resume restores) as if written before the trial's first checkpoint:
    none listed in its _CheckpointManager, its checkpoint count back at the start."""
    from ray import cloudpickle
    from ray._common.utils import binary_to_hex, hex_to_binary
    from ray.train._internal.checkpoint_manager import _CheckpointManager

    from harness.resume import saved_state
    from trainables.paths import atomic_write_text

    state = saved_state(tune_dir)
    entry = next(e for e in state["trial_data"] if json.loads(e[0])["trial_id"] == trial_id)
    trial, meta = json.loads(entry[0]), json.loads(entry[1])
    storage = cloudpickle.loads(hex_to_binary(trial["storage"]["value"]))
    manager = cloudpickle.loads(hex_to_binary(meta["checkpoint_manager"]["value"]))
    storage.current_checkpoint_index = -1
    trial["storage"]["value"] = binary_to_hex(cloudpickle.dumps(storage))
    meta["checkpoint_manager"]["value"] = binary_to_hex(cloudpickle.dumps(_CheckpointManager(manager.checkpoint_config)))
    meta["last_result"] = {}
    entry[:2] = json.dumps(trial), json.dumps(meta)
    atomic_write_text(sorted(tune_dir.glob("experiment_state-*.json"))[-1], json.dumps(state))


HAND_OVER = """
import queue, sys
import ray, torch
from ray import tune
from trainables.pack_actor import MemberSession
from trainables.pack_trial import _report

def hand_over(config):
    for step, handoff in ((1, config["handoff"]), (2, None)):
        reports = queue.Queue()
        MemberSession("t", None, reports, handoff).report({"step": step}, {"adapter": {"w": torch.arange(step * 3.0)}})
        _, metrics, state = reports.get()
        assert isinstance(state, str) == (handoff is not None), type(state)  # a directory's path, or the bytes
        _report(metrics, state if isinstance(state, str) else ray.get(ray.put(state)))

ray.init(num_cpus=1, include_dashboard=False)
result = tune.Tuner(hand_over, param_space={"handoff": sys.argv[1]}, run_config=tune.RunConfig(
    storage_path=sys.argv[2], name="h", checkpoint_config=tune.CheckpointConfig(num_to_keep=None))).fit()[0]
print("ERROR", result.error)
"""


def test_a_members_checkpoint_reaches_tune_from_the_actors_directory_or_from_the_object_store(tmp_path):
    """A Tune trial reports one TrainState each way the pack actor hands it over (MemberSession.report): a
    directory written on this machine, and bytes as Ray maps them from its object store (another node).
    Its own process: a Ray of its own, whatever this one has started."""
    import torch

    handoff = f"harness-test-{tmp_path.name}-"  # MemberSession's directories: this prefix in the temporary directory
    proc = subprocess.run([sys.executable, "-c", HAND_OVER, handoff, str(tmp_path / "runs")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert "ERROR None" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]
    saved = sorted(p for p in (tmp_path / "runs" / "h").rglob("checkpoint_*") if p.is_dir())
    assert len(saved) == 2
    for step, folder in enumerate(saved, 1):
        state = torch.load(folder / "state.pt", weights_only=False)
        assert torch.equal(state["adapter"]["w"], torch.arange(step * 3.0))
        assert json.loads((folder / "report.json").read_text())["step"] == step
    assert not list(Path(tempfile.gettempdir()).glob(f"{handoff}*"))  # the trial deleted the actor's directory
