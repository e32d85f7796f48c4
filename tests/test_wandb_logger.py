"""harness/wandb_logger.py: every trial's W&B run is written by one thread of the driver (real W&B,
offline). The sweep tests drive it through Ray Tune (tests/test_sweep_e2e.py, test_reliability.py); here
its own promises: runs of concurrent trials kept apart, a retried trial in its own run, pickling for
--resume, and a W&B failure costing a warning, not the sweep."""

from __future__ import annotations

import pickle

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
