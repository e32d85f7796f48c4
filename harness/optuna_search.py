"""Ray's OptunaSearch, made safe for a sweep resumed after a kill.

Optuna commits a trial's end to optuna.db the moment Ray tells it; Ray saves its own experiment state
(trial list and searcher) every few seconds. A `kill -9` between the two leaves a trial that Optuna
holds as finished but Ray's saved state still holds as running. `--resume` then restores it from its
last checkpoint, the trial only says its last report again (trainables/trial.py), and Ray passes that
report on to Optuna, which refuses to touch a finished trial (UpdateFinishedTrialError, which would stop
the whole resumed sweep). Such a trial was already told: here it is left as Optuna has it.
A trial the restored searcher never suggested (its state was saved before the trial began, and
harness/resume.py found no newer copy to restore with the trial list) would stop it too (KeyError): its
results run and are recorded, but Optuna, which cannot be told them, keeps it as running.
An objective measured only at the end of a trial (mcq_acc, ppl_<set> under scheduler fifo) is absent from the
intermediate reports: Optuna is told it once, at the trial's completion. (Both incidents: docs/notes.md.)
"""

from __future__ import annotations

from typing import Any

from optuna.exceptions import UpdateFinishedTrialError
from ray.tune.search.optuna import OptunaSearch


class ResumableOptunaSearch(OptunaSearch):
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        if trial_id in self._ot_trials:  # how harness.dashboard.StudyRecorder finds the trial in the study
            self._ot_trials[trial_id].set_user_attr("trial_id", trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in self._ot_trials:
            return  # suggested after the saved searcher state (see above)
        if isinstance(self.metric, str) and self.metric not in result:
            return  # an objective measured at the end of a trial: an intermediate report has no value to tell
        try:
            super().on_trial_result(trial_id, result)
        except UpdateFinishedTrialError:
            self._completed_trials.add(trial_id)  # Ray's own mark: it then skips the trial's completion

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return  # told before the kill, or never suggested by this searcher (above)
        super().on_trial_complete(trial_id, result, error)
