"""harness/optuna_search.py with a real Optuna study in SQLite: a trial whose end Optuna stored after
Ray's last saved state (a kill -9 between the two) says its last report again on --resume; that must
neither stop the sweep nor change what Optuna holds. The whole kill-and-resume runs in
tests/test_reliability.py."""

from __future__ import annotations

import optuna
import pytest
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from harness.optuna_search import ResumableOptunaSearch


def searcher(cls: type, db: str) -> OptunaSearch:
    return cls(space={"lora.r": tune.choice([8, 16, 32])}, metric="eval_loss", mode="min", study_name="s",
               sampler=optuna.samplers.TPESampler(seed=0), storage=optuna.storages.RDBStorage(db))


def report(n: int, loss: float) -> dict:
    return {"eval_loss": loss, "training_iteration": n}


@pytest.fixture
def killed_after_optuna_was_told(tmp_path):
    """A trial with 2 reports: Ray saved the searcher after report 1, Optuna stored the trial's end, then
    the kill. Returns the saved searcher state and the study's database."""
    db, saved = f"sqlite:///{tmp_path / 'optuna.db'}", str(tmp_path / "searcher-state.pkl")
    s = searcher(ResumableOptunaSearch, db)
    config = s.suggest("t1")
    s.on_trial_result("t1", report(1, 2.0))
    s.save(saved)  # Ray's last saved state
    s.on_trial_result("t1", report(2, 1.5))
    s.on_trial_complete("t1", report(2, 1.5))
    return saved, db, config


def test_a_trial_finished_before_the_kill_is_left_as_optuna_holds_it(killed_after_optuna_was_told):
    saved, db, config = killed_after_optuna_was_told
    resumed = searcher(ResumableOptunaSearch, db)
    resumed.restore(saved)
    resumed.on_trial_result("t1", report(2, 1.5))  # the trial only says its last report again ...
    resumed.on_trial_complete("t1", report(2, 1.5))  # ... and ends
    assert resumed.suggest("t2") is not None  # the search goes on

    study = optuna.load_study(study_name="s", storage=db)
    first, second = study.trials
    assert (first.state, first.value, first.params) == (TrialState.COMPLETE, 1.5, config)
    assert first.intermediate_values == {1: 2.0, 2: 1.5}
    assert second.state == TrialState.RUNNING


def test_ray_s_own_searcher_stops_there(killed_after_optuna_was_told):
    """The failure ResumableOptunaSearch exists for (it stopped a resumed sweep in CI)."""
    saved, db, _ = killed_after_optuna_was_told
    plain = searcher(OptunaSearch, db)
    plain.restore(saved)
    with pytest.raises(UpdateFinishedTrialError):
        plain.on_trial_result("t1", report(2, 1.5))


def test_a_trial_the_restored_searcher_never_suggested_does_not_stop_the_sweep(tmp_path):
    """Ray's saved trial list knows a trial that its saved searcher does not (the searcher's file is older):
    the trial's reports and end leave the study as it is, and the search goes on."""
    db, saved = f"sqlite:///{tmp_path / 'optuna.db'}", str(tmp_path / "searcher-state.pkl")
    s = searcher(ResumableOptunaSearch, db)
    s.suggest("t1")
    s.save(saved)  # the searcher's last saved state
    s.suggest("t2")  # then the kill
    resumed = searcher(ResumableOptunaSearch, db)
    resumed.restore(saved)
    resumed.on_trial_result("t2", report(1, 2.0))
    resumed.on_trial_complete("t2", report(1, 2.0))
    resumed.on_trial_result("t1", report(1, 1.8))
    resumed.on_trial_complete("t1", report(1, 1.8))
    assert resumed.suggest("t3") is not None

    first, second, third = optuna.load_study(study_name="s", storage=db).trials
    assert (first.state, first.value) == (TrialState.COMPLETE, 1.8)
    assert (second.state, second.intermediate_values) == (TrialState.RUNNING, {})  # t2: never told
    assert third.state == TrialState.RUNNING
    plain = searcher(OptunaSearch, db)  # Ray's own searcher stops there
    plain.restore(saved)
    with pytest.raises(KeyError):
        plain.on_trial_result("t2", report(1, 2.0))
