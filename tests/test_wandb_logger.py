"""harness/wandb_logger.py: every trial's W&B run is written by one thread of the driver (real W&B,
offline). The sweep tests drive it through Ray Tune (tests/test_sweep_e2e.py, test_reliability.py); here
its own promises: runs of concurrent trials kept apart, a retried trial in its own run, pickling for
--resume, and a W&B failure costing a warning, not the sweep."""

from __future__ import annotations

import pickle
from pathlib import Path

from helpers import wandb_runs

from harness.wandb_logger import WandbLogger


class Trial:
    """What the callback reads of a Ray Tune trial: its id, its searched parameters, its name."""

    def __init__(self, trial_id: str, r: int):
        self.trial_id, self.config = trial_id, {"lora.r": r, "lora.alpha": 2 * r}

    def __str__(self) -> str:
        return f"train_trial_{self.trial_id}"


def test_concurrent_trials_get_their_own_runs_with_config_and_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(project="lora-sweeps", entity=None, group="ranks", dir=str(tmp_path), mode="offline")
    a, b = Trial("aaaa0001", 4), Trial("bbbb0002", 16)
    logger.log_trial_start(a)
    logger.log_trial_start(b)
    for report in (1, 2):  # interleaved, as two trials running at once report
        logger.log_trial_result(report, a, {"training_iteration": report, "eval_loss": 2.0 - report / 10,
                                            "node": "host/abc", "config": {"lora.r": 4}, "pid": 11})
        logger.log_trial_result(report, b, {"training_iteration": report, "eval_loss": 3.0 - report / 10})
    logger.log_trial_end(a)
    pickle.dumps(logger)  # Tuner pickles its callbacks (for --resume) while the thread runs
    logger.on_experiment_end([a, b])  # b never ended (Ctrl-C): its run is finished here
    assert not logger._thread.is_alive()

    logged = wandb_runs(tmp_path)
    assert set(logged) == {"aaaa0001", "bbbb0002"}
    a_run, b_run = logged["aaaa0001"], logged["bbbb0002"]
    assert a_run["config"]["lora.alpha"] == 8 and a_run["config"]["pid"] == 11 and a_run["group"] == "ranks"
    assert "node" not in a_run["config"]  # a report's value, not the trial's config
    assert a_run["eval_loss"] == [1.9, 1.8] and b_run["eval_loss"] == [2.9, 2.8]  # each report in its own run


def test_unpickled_logger_logs_again_and_a_retried_trial_stays_in_its_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = pickle.loads(pickle.dumps(WandbLogger(project="p", entity=None, group="g", dir=str(tmp_path),
                                                   mode="offline")))
    t = Trial("cccc0003", 8)
    logger.log_trial_start(t)
    logger.log_trial_result(1, t, {"training_iteration": 1, "eval_loss": 1.5})
    logger.log_trial_start(t)  # Tune restarts a failed trial from its checkpoint: same run, not a second
    logger.log_trial_result(2, t, {"training_iteration": 2, "eval_loss": 1.25})
    logger.on_experiment_end([t])
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1
    assert wandb_runs(tmp_path)["cccc0003"]["eval_loss"] == [1.5, 1.25]


def test_a_failing_wandb_costs_a_warning_not_the_sweep(tmp_path, monkeypatch, capsys):
    # Online, to a server that refuses connections: wandb.init fails in the logging thread.
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_API_KEY", "planted0wandb0key0a8f3e2d9c1b7a6e5f4d3c2b1a09")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    logger = WandbLogger(project="p", entity=None, group="g", dir=str(tmp_path), mode="online")
    t = Trial("dddd0004", 8)
    logger.log_trial_start(t)
    logger.log_trial_result(1, t, {"training_iteration": 1, "eval_loss": 1.5})
    logger.log_trial_end(t)
    logger.on_experiment_end([t])  # returns: nothing raised in the driver
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: W&B logging of trial dddd0004 stopped (")
    assert err[0].endswith("results.csv has everything")


class _Storage:
    def __init__(self, working_dir: Path):
        self.trial_working_directory = str(working_dir)


def test_a_trials_run_holds_its_resolved_config_and_its_own_output(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_TOKEN", "hf_planted0token0for0the0output0log")
    logger = WandbLogger(project="p", entity=None, group="g", dir=str(tmp_path), mode="offline")
    trials = [Trial("eeee0005", 4), Trial("ffff0006", 8)]
    for t in trials:
        (tmp_path / "trials" / t.trial_id).mkdir(parents=True)
        resolved = {"lora": {"r": t.config["lora.r"], "alpha": t.config["lora.alpha"], "dropout": 0.05},
                    "train": {"lr": 5e-4, "epochs": 1}, "data": {"eval": None}}
        (tmp_path / "trials" / t.trial_id / "config.json").write_text(json.dumps(resolved))
        work = tmp_path / "work" / t.trial_id
        work.mkdir(parents=True)
        (work / "output.log").write_text(f"trial {t.trial_id} says hello\ntoken hf_planted0token0for0the0output0log\n")
        t.storage = _Storage(work)
        logger.log_trial_start(t)
        logger.log_trial_result(1, t, {"training_iteration": 1, "eval_loss": 1.5})
    for t in trials:
        logger.log_trial_end(t)
    logger.on_experiment_end(trials)

    logged = wandb_runs(tmp_path)
    cfg = logged["eeee0005"]["config"]
    assert cfg["lora.alpha"] == 8 and cfg["train.lr"] == 5e-4 and cfg["lora.dropout"] == 0.05 and cfg["lora.r"] == 4
    for t in trials:
        run_dir = next((tmp_path / "wandb").glob(f"offline-run-*-{t.trial_id}"))
        out = (run_dir / "files" / "output.log").read_text()
        assert f"trial {t.trial_id} says hello" in out  # its own output
        assert not any(o.trial_id in out for o in trials if o is not t)  # and no other trial's
        assert "hf_planted0token" not in out and "${HF_TOKEN}" in out
