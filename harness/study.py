"""Every sweep as an Optuna study (runs/<name>/optuna.db), whatever its search algorithm, so that
optuna-dashboard (harness/dashboard.py) shows it live and after it ends.

With `search.algorithm: optuna` the study is the searcher's own (Ray's OptunaSearch records the parameters,
the objective at every report and the final value; the recorder adds the attributes below); with grid or
random search, a study of the same name that the recorder fills itself:
  params              the searched values (tied ones as user attribute `tied/<path>`)
  intermediate value  the objective (search.metric) at each report, step = the report number
  state               COMPLETE with the objective / PRUNED when stopped early / FAIL on an error
                      (optuna: the searcher sets it; a trial stopped early stays COMPLETE there)
  user attributes     trial_id (Ray's), status (results.csv's: RUNNING, TERMINATED, EARLY_STOPPED, ERROR),
                      report ("k/n") and the cost columns (tokens_seen, train_tokens, train_seconds, ...)
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from ray import tune

from harness.results import COST

ATTRS = ("status", "error_type", *COST)


def _distribution(p: Any) -> Any:
    """The Optuna distribution of a search-space entry (None: not representable, recorded as a user attribute)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.kind in ("grid", "choice"):
        values = p.grid if p.kind == "grid" else p.choice
        ok = all(v is None or isinstance(v, (bool, int, float, str)) for v in values)
        return CategoricalDistribution(list(dict.fromkeys(values))) if ok and values else None
    lo, hi = getattr(p, p.kind)
    if p.kind == "int":
        return IntDistribution(int(lo), int(hi))
    return FloatDistribution(float(lo), float(hi), log=p.kind == "loguniform")


class StudyRecorder(tune.Callback):
    """Records every trial of the sweep in its Optuna study (module docstring). Runs after ResultsWriter,
    whose rows give each trial's status as results.csv has it. Optuna trials carry Ray's trial id as the
    user attribute `trial_id` (ResumableOptunaSearch sets it on those it suggests), which is how a trial
    is found again, after a --resume too."""

    def __init__(self, db: Path, study_name: str, search: Any, writer: Any):
        import optuna

        self.storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
        self.name, self.metric, self.writer = study_name, search.metric, writer
        self.searcher_owns = search.algorithm == "optuna"  # Ray's OptunaSearch creates and tells its study
        self.dists = {path: _distribution(p) for path, p in search.space.items() if p.kind != "tie"}
        if len(search.seeds) > 1 and "train.seed" not in self.dists:
            self.dists["train.seed"] = optuna.distributions.CategoricalDistribution(list(search.seeds))
        if not self.searcher_owns:
            optuna.create_study(storage=self.storage, study_name=study_name, load_if_exists=True,
                                direction="maximize" if search.mode == "max" else "minimize")
        self.ids: dict[str, int] = {}  # Ray trial id -> Optuna trial id

    def _id(self, trial: Any) -> int | None:
        if trial.trial_id not in self.ids:  # suggested by the searcher, or recorded before a --resume
            study_id = self.storage.get_study_id_from_name(self.name)
            for t in self.storage.get_all_trials(study_id, deepcopy=False):
                if "trial_id" in t.user_attrs:
                    self.ids[t.user_attrs["trial_id"]] = t._trial_id
        return self.ids.get(trial.trial_id)

    def _open(self, trial: Any) -> int | None:
        """The trial's Optuna record, created with its parameters when this trial (or this run of an
        errored trial that --retry-errored reruns) has none that is still running."""
        import optuna

        tid = self._id(trial)
        if self.searcher_owns or (tid is not None and
                                  self.storage.get_trial(tid).state == optuna.trial.TrialState.RUNNING):
            return tid
        tid = self.storage.create_new_trial(self.storage.get_study_id_from_name(self.name))
        for path, dist in self.dists.items():
            value = trial.config.get(path)
            if dist is not None and value is not None:
                self.storage.set_trial_param(tid, path, dist.to_internal_repr(value), dist)
            elif value is not None:
                self.storage.set_trial_user_attr(tid, f"config/{path}", value)
        self.storage.set_trial_user_attr(tid, "trial_id", trial.trial_id)
        self.ids[trial.trial_id] = tid
        return tid

    def _attrs(self, trial: Any, tid: int) -> dict[str, Any]:
        row = self.writer.rows([trial])[0]
        for key, value in row.items():
            if key in ATTRS and value not in ("", None) or key.startswith("config/") and key[7:] not in self.dists:
                self.storage.set_trial_user_attr(tid, "tied/" + key[7:] if key.startswith("config/") else key, value)
        return row

    def _safely(self, fn: Any, *args: Any) -> None:
        """A record that cannot be written (a finished Optuna trial told again after a resume, a locked
        database) must not stop the sweep: the study is a view of results.csv, not its source."""
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001
            print(f"warning: optuna study: {type(e).__name__}: {e}", file=sys.stderr)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._safely(self._start, trial)

    def _start(self, trial: Any) -> None:
        tid = self._open(trial)
        if tid is not None:
            self._attrs(trial, tid)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._safely(self._result, trial, result)

    def _result(self, trial: Any, result: dict) -> None:
        import optuna

        tid = self._id(trial)
        if tid is None or self.storage.get_trial(tid).state != optuna.trial.TrialState.RUNNING:
            return
        value, step = result.get(self.metric), result.get("report", result.get("training_iteration"))
        if not self.searcher_owns and _finite(value) and step is not None:
            self.storage.set_trial_intermediate_value(tid, int(step), float(value))
        self.storage.set_trial_user_attr(tid, "report", f"{step}/{self.writer.reports_per_trial}")
        self._attrs(trial, tid)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._safely(self._end, trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._safely(self._end, trial)

    def _end(self, trial: Any) -> None:
        import optuna

        tid = self._id(trial)
        if tid is None:
            return
        row = self._attrs(trial, tid)
        if self.searcher_owns or self.storage.get_trial(tid).state != optuna.trial.TrialState.RUNNING:
            return  # the searcher tells Optuna itself
        value = (trial.last_result or {}).get(self.metric)
        State = optuna.trial.TrialState
        if row["status"] == "EARLY_STOPPED":
            self.storage.set_trial_state_values(tid, State.PRUNED)
        elif row["status"] == "TERMINATED" and _finite(value):
            self.storage.set_trial_state_values(tid, State.COMPLETE, [float(value)])
        elif row["status"] in ("TERMINATED", "ERROR"):
            self.storage.set_trial_state_values(tid, State.FAIL)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
