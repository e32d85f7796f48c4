"""Ray's OptunaSearch, made safe for a sweep resumed after a kill.

Optuna commits a trial's end to optuna.db the moment Ray tells it; Ray saves its own experiment state
(trial list and searcher) every few seconds. A `kill -9` between the two leaves a trial that Optuna
holds as finished but Ray's saved state still holds as running. `--resume` then restores it from its
last checkpoint, the trial only says its last report again (trainables/qlora.py), and Ray passes that
report on to Optuna, which refuses to touch a finished trial (UpdateFinishedTrialError) and stopped the
whole resumed sweep (CI, 2026-12-01). Such a trial was already told: here it is left as Optuna has it.
"""

from __future__ import annotations

from typing import Any

from optuna.exceptions import UpdateFinishedTrialError
from ray.tune.search.optuna import OptunaSearch


class ResumableOptunaSearch(OptunaSearch):
    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except UpdateFinishedTrialError:
            self._completed_trials.add(trial_id)  # Ray's own mark: it then skips the trial's completion

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials:
            return  # told before the kill (above); Ray's version would log a warning for it
        super().on_trial_complete(trial_id, result, error)
