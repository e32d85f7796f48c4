"""What a running sweep prints: one live table on a terminal, a plain line per event anywhere else.

On a terminal (harness.console.interactive) `SweepDisplay` keeps one table updated in place (rich.live):
per trial its status (EARLY_STOPPED and ERROR apart from TERMINATED), searched values, report k/n,
objective, best so far, tokens/s, node and elapsed time, under a line for the sweep (done / running /
pending and the time left at the measured rate). Piped or in CI it prints one line per event (started,
reported, stopped early, finished, failed) with no control characters and nothing cut. Both are a Ray
Tune callback; Tune's own status block is replaced by `Silent` (a ProgressReporter that never reports).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

# Ray Tune warns when a driver step takes over 0.5 s, a threshold read once, when ray.tune is imported: on
# 2 busy cores our callbacks' writes pass it now and then (8 lines in the default sweep), which is no news
# to a user. Ten times that still warns of a real stall.
os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "5")

from ray.tune import Callback, ProgressReporter  # noqa: E402

from harness.console import duration, interactive, plain


class Silent(ProgressReporter):
    """Tune's progress reporter, replaced by SweepDisplay (a callback: it sees every event, not a poll)."""

    def should_report(self, trials: list, done: bool = False) -> bool:
        return False

    def report(self, trials: list, done: bool, *sys_info: str) -> None:
        return None


def _num(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "" if v is None else str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@dataclass
class TrialState:
    trial_id: str
    params: dict[str, Any]
    status: str = "PENDING"
    started: float | None = None
    ended: float | None = None
    report: int = 0
    objective: float | None = None
    best: float | None = None
    tokens_per_second: float | None = None
    node: str = ""
    pack: str = ""  # resources.pack > 1: the pack actor it trains in (trials sharing one base model)
    error: str = ""
    history: list[float] = field(default_factory=list)

    def elapsed(self, now: float) -> float:
        return ((self.ended or now) - self.started) if self.started else 0.0


class SweepDisplay(Callback):
    """A Ray Tune callback that shows the sweep: live table on a terminal, event lines otherwise."""

    def __init__(self, *, metric: str, mode: str, searched: list[str], reports_per_trial: int, total_trials: int,
                 live: bool | None = None, out: TextIO | None = None):
        self.metric, self.mode, self.searched = metric, mode, searched
        self.reports_per_trial, self.total_trials = max(reports_per_trial, 1), total_trials
        self.out = out or sys.stdout
        self.live_mode = interactive(self.out) if live is None else live
        self.trials: dict[str, TrialState] = {}
        self.t0: float | None = None
        self._live: Any = None
        self._last_refresh = 0.0

    # Tuner pickles its callbacks (for --resume): no open terminal in there.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_live", "out")} | {"_live": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.out, self.t0 = sys.stdout, None  # a resumed sweep's clock starts again, on its own console
        self.live_mode = interactive(self.out)

    # ------------------------------------------------------------------ Tune's events

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        t = self._state(trial)
        t.status, t.started, t.ended = "RUNNING", time.time(), None
        self._event(t, "started: " + (self._params(t) or "base configuration"))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        t = self._state(trial)
        t.report = int(result.get("report", result.get("training_iteration", t.report + 1)) or 0)
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            t.objective = float(value)
            t.history.append(float(value))
            better = min if self.mode == "min" else max
            t.best = t.objective if t.best is None else better(t.best, t.objective)
        tps = result.get("tokens_per_second")
        t.tokens_per_second = float(tps) if isinstance(tps, (int, float)) else t.tokens_per_second
        t.node = str(result.get("node") or result.get("node_ip") or t.node)
        t.pack = str(result.get("pack_id") or t.pack)
        where = f" on {t.node}" if t.node else ""  # which machine ran it: a cluster's trials spread out
        where += f" in pack {t.pack}" if t.pack else ""
        self._event(t, f"report {t.report}/{self.reports_per_trial}: {self._values(t)}{where}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from harness.results import trial_row

        t = self._state(trial)
        t.status, t.ended = trial_row(trial, [], [], self.reports_per_trial, ended="complete")["status"], time.time()
        verb = "stopped early" if t.status == "EARLY_STOPPED" else "finished"
        self._event(t, f"{verb} at report {t.report}/{self.reports_per_trial}: {self._values(t)} "
                       f"({duration(t.elapsed(t.ended))})", progress=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from harness.results import trial_row

        t = self._state(trial)
        t.status, t.ended = "ERROR", time.time()
        t.error = trial_row(trial, [], [], self.reports_per_trial, ended="error").get("error") or "no message"
        self._event(t, f"failed at report {t.report}/{self.reports_per_trial}: {t.error}", progress=True)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._sync(iteration, trials)
        if self.live_mode and time.time() - self._last_refresh >= 1.0:
            self._refresh()

    def _sync(self, iteration: int, trials: list) -> None:
        """Trials Tune created but has not started, a resumed sweep's ended ones (as they stand), and a
        trial Tune failed without telling the callbacks (it could not start it in a reused worker)."""
        for trial in trials:
            known = trial.trial_id in self.trials
            t = self._state(trial)
            if not known:
                t.status = str(trial.status)
            elif str(trial.status) == "ERROR" and t.status in ("PENDING", "RUNNING"):
                self.on_trial_error(iteration, trials, trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._sync(-1, trials)
        if self._live is not None:
            self._refresh()
            self._live.stop()
            self._live = None

    # ------------------------------------------------------------------ state and text

    def _state(self, trial: Any) -> TrialState:
        if self.t0 is None:
            self.t0 = time.time()
        tid = str(trial.trial_id)
        if tid not in self.trials:
            params = {p: trial.config.get(p) for p in self.searched if p in trial.config}
            self.trials[tid] = TrialState(tid, params)
        return self.trials[tid]

    def _params(self, t: TrialState) -> str:
        return ", ".join(f"{k}={_num(v)}" for k, v in t.params.items())

    def _values(self, t: TrialState) -> str:
        # An objective scored only at the final report (an MCQ set, the judge) is absent before it.
        parts = [f"{self.metric} {_num(t.objective)} (best {_num(t.best)})" if t.objective is not None
                 else f"{self.metric} not reported yet"]
        if t.tokens_per_second is not None:
            parts.append(f"{t.tokens_per_second:.0f} tok/s")
        return ", ".join(parts)

    def progress(self, now: float | None = None) -> str:
        """"2 of 5 trials done (1 stopped early, 0 failed), 2 running, 1 pending; 3m10s, about 2m40s left"."""
        now = now or time.time()
        states = list(self.trials.values())
        done = [t for t in states if t.status in ("TERMINATED", "EARLY_STOPPED", "ERROR")]
        running = sum(t.status == "RUNNING" for t in states)
        pending = max(self.total_trials - len(done) - running, 0)
        stopped, failed = (sum(t.status == s for t in done) for s in ("EARLY_STOPPED", "ERROR"))
        elapsed = now - self.t0 if self.t0 else 0.0
        reports = sum(t.report for t in states)
        left = sum(self.reports_per_trial - t.report for t in states if t.status == "RUNNING")
        left += pending * self.reports_per_trial
        # The measured rate of the whole sweep (concurrent trials included); early stopping can only shorten it.
        eta = (f"at most about {duration(left * elapsed / reports)} left" if reports and left
               else "time left known after the first report" if left else "finishing")
        return (f"{len(done)} of {self.total_trials} trials done ({stopped} stopped early, {failed} failed), "
                f"{running} running, {pending} pending; {duration(elapsed)} elapsed, {eta}")

    def _event(self, t: TrialState, text: str, progress: bool = False) -> None:
        if self.live_mode:
            self._refresh()
            return
        stamp = f"[{duration(time.time() - self.t0) if self.t0 else '0s':>6}]"
        print(f"{stamp} trial {t.trial_id} {plain(text)}", file=self.out, flush=True)
        if progress:
            print(f"{' ' * len(stamp)} sweep: {self.progress()}", file=self.out, flush=True)

    # ------------------------------------------------------------------ the live table

    def table(self, now: float | None = None) -> Any:
        from rich.table import Table

        now = now or time.time()
        table = Table(title=self.progress(now), title_justify="left", expand=False)
        packs = ["pack"] if any(t.pack for t in self.trials.values()) else []  # which trials share a worker
        for col in ["trial", "status", *self.searched, "report", self.metric, "best", "tok/s", "node", *packs,
                    "elapsed"]:
            table.add_column(col, no_wrap=True)
        style = {"EARLY_STOPPED": "yellow", "ERROR": "red", "TERMINATED": "green", "RUNNING": "cyan"}
        for t in self.trials.values():
            table.add_row(t.trial_id, f"[{style.get(t.status, 'dim')}]{t.status}[/]",
                          *[_num(t.params.get(p)) for p in self.searched],
                          f"{t.report}/{self.reports_per_trial}", _num(t.objective), _num(t.best),
                          f"{t.tokens_per_second:.0f}" if t.tokens_per_second is not None else "", t.node,
                          *([t.pack] if packs else []), duration(t.elapsed(now)) if t.started else "")
        return table

    def _refresh(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self._last_refresh = time.time()
        if self._live is None:
            self._live = Live(self.table(), console=Console(file=self.out), auto_refresh=False,
                              redirect_stdout=True, redirect_stderr=True)
            self._live.start()
        self._live.update(self.table(), refresh=True)
