"""W&B logging of a sweep: one W&B run per trial, all written by one thread of the driver.

Ray's WandbLoggerCallback starts two Ray actors per trial (a queue and a logger), each a new worker
process with its own W&B service connection. On a 2-core machine those processes take CPU from the
training trials: a worker's first trial set up in 16-18 s with them, 11 s with this logger or without
W&B (docs/performance.md).
W&B can hold many runs in one process (`reinit="create_new"`), so here a single thread of the driver
owns every trial's run: starting a run costs ~0.2 s of that thread and nothing in the trials.

Per trial a run named after the trial, id = trial id (so a resumed trial continues its run), the sweep as
its group, the trial's whole resolved configuration as its config (dotted keys: lora.r, lora.alpha,
train.lr...), every report's numbers with the report number as the step, and, when it ends, the trial's
own stdout and stderr as its output.log (not the driver's console). A W&B failure costs a warning,
never the sweep.

Secrets never reach it: the driver hands it the project, group and searched parameters with secret
values masked (trainables/secrets.py), and W&B records neither the command line, the code, git state
nor the driver's console (`SETTINGS`): results.csv and sweep.yaml hold those, masked; a trial's
output.log is masked as it is copied.
"""

from __future__ import annotations

import json
import numbers
import queue
import sys
import threading
from pathlib import Path
from typing import Any

from ray.tune.logger import LoggerCallback

# Reported values that are Tune's bookkeeping, not the trial's results.
_NOT_LOGGED = ("config", "done", "should_checkpoint")
# Constant per trial: config, not a time series.
_TO_CONFIG = ("trial_id", "node_ip", "hostname", "pid", "node_id")
# No argv, program, git or system metadata (x_disable_meta), no code, no copy of the driver's console.
SETTINGS = {"x_disable_meta": True, "disable_code": True, "save_code": False, "disable_git": True, "console": "off"}
# The trial's own stdout and stderr, written by Ray Tune in the trial's working directory (RunConfig
# log_to_file); saved into the trial's run as its output.log when the trial ends.
TRIAL_OUTPUT = "output.log"


def trial_config(run_dir: Path, trial: Any) -> dict[str, Any]:
    """The trial's whole resolved configuration, dotted ("lora.alpha", "train.lr"), from the config.json the
    driver's ResultsWriter wrote at the trial's start (secret values masked; that callback runs first);
    the searched values alone when it is not there."""
    searched = {k: v for k, v in trial.config.items() if isinstance(v, (numbers.Number, str, bool, type(None)))}
    path = Path(run_dir) / "trials" / str(trial.trial_id) / "config.json"
    try:
        full = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return searched
    import pandas as pd

    flat = pd.json_normalize(full, sep=".").to_dict(orient="records")[0]
    return {**{k: v for k, v in flat.items() if not (isinstance(v, float) and v != v)}, **searched}


class WandbLogger(LoggerCallback):
    """A Ray Tune callback; `mode` offline writes the runs under <dir>/wandb/offline-run-*-<trial id>."""

    def __init__(self, *, project: str, entity: str | None, group: str, dir: str, mode: str):
        self.init_kwargs = {"project": project, "entity": entity, "group": group, "dir": dir, "mode": mode}
        # Bounded wait at the end for runs to flush (an upload can hang on a bad network).
        self.finish_timeout_s = 60 if mode == "offline" else 300
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue = queue.Queue()
        self._open: set[str] = set()  # trials whose run is started and not yet told to finish

    # Tuner pickles its callbacks into the experiment (for --resume): no thread or queue in there.
    def __getstate__(self) -> dict[str, Any]:
        return {"init_kwargs": self.init_kwargs, "finish_timeout_s": self.finish_timeout_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["init_kwargs"])  # type: ignore[misc]
        self.finish_timeout_s = state["finish_timeout_s"]

    # ------------------------------------------------------------------ driver side (Tune's loop)

    def _put(self, *item: Any) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="wandb-logger", daemon=True)
            self._thread.start()
        self._queue.put(item)

    def log_trial_start(self, trial: Any) -> None:
        if trial.trial_id in self._open:  # a retried trial goes on in the run it has
            return
        self._open.add(trial.trial_id)
        config = trial_config(self.init_kwargs["dir"], trial)
        self._put("start", trial.trial_id, {"name": str(trial), "config": config})

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial.trial_id not in self._open:
            self.log_trial_start(trial)
        # A trial's report is flat (trainables/trial.py); Tune adds the nested config, not logged.
        values = {k: v for k, v in result.items()
                  if isinstance(v, numbers.Number) and k not in _NOT_LOGGED and k not in _TO_CONFIG}
        config = {k: result[k] for k in _TO_CONFIG if k in result}
        self._put("log", trial.trial_id, (values, config, result.get("training_iteration")))

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        if trial.trial_id in self._open:
            self._open.discard(trial.trial_id)
            output = _trial_output(trial)
            if output is not None:
                self._put("output", trial.trial_id, output)
            self._put("finish", trial.trial_id, 1 if failed else 0)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Finish every run still open (trials interrupted by Ctrl-C too), then wait for the thread."""
        if self._thread is None:
            return
        for trial_id in list(self._open):
            self._put("finish", trial_id, 0)
        self._open.clear()
        self._put("stop", None, None)
        self._thread.join(self.finish_timeout_s)
        if self._thread.is_alive():
            print(f"warning: W&B did not finish its runs within {self.finish_timeout_s} s; "
                  f"what it wrote is under {self.init_kwargs['dir']}/wandb", file=sys.stderr)

    # ------------------------------------------------------------------ the logging thread

    def _work(self) -> None:
        runs: dict[str, Any] = {}
        failed: set[str] = set()
        wandb = None
        while True:
            kind, trial_id, payload = self._queue.get()
            if kind == "stop":
                break
            if trial_id in failed:
                continue
            try:
                if wandb is None:  # imported here, off Tune's loop (~1 s); WANDB_SILENT: harness.tuner.quiet_env
                    import wandb
                if kind == "start":
                    runs[trial_id] = wandb.init(id=trial_id, **payload, **self.init_kwargs, reinit="create_new",
                                                resume="allow", allow_val_change=True,
                                                settings=wandb.Settings(**SETTINGS))
                elif kind == "log" and trial_id in runs:
                    values, config, step = payload
                    if config:
                        runs[trial_id].config.update(config, allow_val_change=True)
                    runs[trial_id].log(values, step=step)
                elif kind == "output" and trial_id in runs:
                    _save_output(runs[trial_id], payload)
                elif kind == "finish" and trial_id in runs:
                    runs.pop(trial_id).finish(exit_code=payload)
            except Exception as e:  # noqa: BLE001 - W&B is a copy of results.csv; it must not stop the sweep
                failed.add(trial_id)
                reason = (str(e).splitlines() or [""])[0]
                print(f"warning: W&B logging of trial {trial_id} stopped ({type(e).__name__}: {reason}); "
                      "results.csv has everything", file=sys.stderr)
        if wandb is not None:
            try:
                wandb.teardown()  # closes the W&B service now, not in an exit hook after Ray is gone
            except Exception:  # noqa: BLE001 - every run is finished and written
                pass


def _trial_output(trial: Any) -> Path | None:
    """The trial's own output file, where this process can read it (the trial ran on this node)."""
    try:
        path = Path(trial.storage.trial_working_directory) / TRIAL_OUTPUT
    except Exception:  # noqa: BLE001 - a trial without Ray's storage context (tests, old pickles)
        return None
    return path if path.is_file() else None


def _save_output(run: Any, source: Path) -> None:
    """Copy the trial's output, secret values masked, into the run's files as output.log."""
    from trainables.secrets import redact

    target = Path(run.dir) / TRIAL_OUTPUT
    lines = source.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    # Ray's own markers (":actor_name:train_trial") say which actor wrote; not the trial's output.
    target.write_text(redact("".join(ln for ln in lines if not ln.startswith(":actor_name:"))), encoding="utf-8")
    run.save(str(target), base_path=str(target.parent), policy="now")
