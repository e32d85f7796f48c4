"""Sweep outputs: results.csv (the contract in DESIGN.md), per-trial history and config, best.yaml.

`ResultsWriter` is a Ray Tune callback in the driver: it sees every report of every trial,
appends it to trials/<id>/metrics.jsonl and rewrites results.csv atomically, so a kill at
any moment leaves the last complete table on disk. It rebuilds the table from Ray's trial
list each time, so after a resume it continues where the restored experiment stands.
When the sweep is stored at a URI it writes the local copy and uploads what changed
(trainables/storage.py), at most every PUSH_EVERY_S seconds and at the end.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import yaml
from ray import tune

from results_contract import COST, TRAIN_METRICS
from trainables.paths import ENDED, atomic_write_text, trial_ended

PUSH_EVERY_S = 10.0
# Reported every time but not worth a results column (they are in metrics.jsonl).
HISTORY_ONLY = {"step", "epoch", "lr", "total_steps", "training_iteration", "time_total_s", "report",
                "relay_peak_rss_mb"}
# Per-report values worth keeping in metrics.jsonl.
HISTORY_KEYS = ["report", "training_iteration", "step", "total_steps", "epoch", "tokens_seen", "eval_loss", "train_loss",
                "tokens_per_second", "lr", "time_total_s", "train_seconds", "heldout_seconds", "rss_mb", "peak_rss_mb",
                "relay_peak_rss_mb", "pid", "timestamp"]


# "ValueError: ...", "ray.exceptions.RayTaskError(FloatingPointError): ...", "torch.OutOfMemoryError: ..."
_EXC_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt))(?:\((\w+)\))?:")
_FRAME = re.compile(r'^File "([^"]+)", line (\d+), in (\S+)')


def _one_failure(text: str) -> tuple[str, str, str]:
    """(error type, the exception line with the lines of message that follow it, where it was raised)."""
    lines = [ln.strip() for ln in text.strip().splitlines()]
    lines = [ln for ln in lines if ln and set(ln) - set("^~ ")]  # drop blanks and caret markers
    at = next((i for i in range(len(lines) - 1, -1, -1) if _EXC_LINE.match(lines[i])), None)
    if at is None:
        return "", " | ".join(lines[-3:]), ""
    m = _EXC_LINE.match(lines[at])
    frames = [f for f in (_FRAME.match(ln) for ln in lines[:at]) if f]
    where = f" (at {Path(frames[-1].group(1)).name}:{frames[-1].group(2)} in {frames[-1].group(3)})" if frames else ""
    return m.group(2) or m.group(1), " | ".join(lines[at : at + 4]), where


def error_summary(text: str) -> tuple[str, str]:
    """(error type, one-line summary) of a traceback: the exception line with the lines of message
    that follow it, then where it was raised, e.g.
    ('FloatingPointError', 'FloatingPointError: loss became NaN ... (at qlora.py:221 in train_trial)').
    Of Ray's error file with several failures ("Failure # N") the last one counts; when retries only
    raised the same error again (a NaN trial's retry fails at once), where it was first raised."""
    failures = [f for f in re.split(r"(?m)^Failure # \d+.*$", text) if f.strip()] or [text]
    kind, message, where = _one_failure(failures[-1])
    first = next((w for k, m, w in map(_one_failure, failures[:-1]) if (k, m) == (kind, message) and w), where)
    return kind, (message[: 500 - len(first)] + first)[:500]


def _trial_error(trial: Any, copy: Path | None = None) -> tuple[str, str]:
    """From Ray's error file, else from the trial's own copy (`copy`: trials/<id>/error.txt; Ray's saved
    state may predate the failure when a kill came just after it)."""
    saved = getattr(trial, "path", None)  # after --resume the session that wrote error_file is gone;
    # Ray copied it to tune/<trial>/
    for path in (getattr(trial, "error_file", None), saved and f"{saved}/error.txt", copy):
        if path and Path(path).is_file():
            return error_summary(Path(path).read_text(errors="replace"))
    return "", ""


def _failures(trial: Any) -> int:
    meta = getattr(trial, "run_metadata", None)
    return int(getattr(meta, "num_failures", 0) or 0)


def trial_row(trial: Any, searched: list[str], extra_metrics: list[str], reports_per_trial: int,
              ties: dict[str, Any] | None = None, ended: str | None = "complete",
              error_copy: Path | None = None) -> dict[str, Any]:
    """One results.csv row. `ended`: how the trial ended (trainables.paths.trial_ended: "complete",
    "error", None while it has not). Ray calls the callbacks before it changes the trial's status, so an
    ended trial Ray still calls RUNNING is recorded as ended at once; one that Ray marks TERMINATED
    without having ended was stopped by Ctrl-C: INTERRUPTED, and --resume goes on."""
    last = dict(trial.last_result or {})
    params = {**trial.config, **(ties or {})}
    status = row_status(trial.status, last, ended, reports_per_trial)
    error_type, error = _trial_error(trial, error_copy) if status == "ERROR" else ("", "")
    row: dict[str, Any] = {
        "trial_id": trial.trial_id, "status": status, "stopped_early": str(status == "EARLY_STOPPED").lower(),
        "error": error, "node_id": last.get("node_id", ""),
    }
    if "pack_id" in last:  # resources.pack > 1: the pack actor that trained it, the trials it trained with
        row |= {"pack_id": last["pack_id"], "packed_with": last.get("packed_with", "")}
    row |= {"seed": last.get("seed", trial.config.get("train.seed", "")), "error_type": error_type,
            "failures": _failures(trial)}
    for path in searched:
        row[f"config/{path}"] = params.get(path, "")
    for key in [*TRAIN_METRICS, *extra_metrics, *COST]:
        row[key] = last.get(key, "")
    if "embedding" in last:  # diversity trials: what k-center embedded with (auto may have fallen back to tfidf)
        row["embedding"] = last["embedding"]
    for key, value in last.items():  # subset statistics, hygiene counts, load times...
        if _extra_column(key, value) and key not in row:
            row[key] = value
    return row


def row_status(status: str, last: dict[str, Any], ended: str | None, reports_per_trial: int) -> str:
    """The results.csv status of a trial Ray calls `status`, from its last report and how it ended."""
    if status in ("RUNNING", "PENDING", "PAUSED") and ended in ("complete", "error"):
        status = "TERMINATED" if ended == "complete" else "ERROR"
    # Stopped early = ended before its last training step (the trial reports both; Ray's own
    # training_iteration can lag behind the trial's reports after a resume).
    if "total_steps" in last:
        finished = last.get("step", 0) >= last["total_steps"]
    else:
        finished = (last.get("report", last.get("training_iteration", 0)) or 0) >= reports_per_trial
    if status == "TERMINATED" and not finished:
        return "EARLY_STOPPED" if ended else "INTERRUPTED"
    return status


def _extra_column(key: str, value: Any) -> bool:
    """A numeric value of a report that gets its own column (not Ray's flags, timestamps or ids)."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return numeric and key not in HISTORY_ONLY and not key.startswith(
        ("config/", "time_", "timestamp", "pid", "iterations_since", "done"))


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def read_rows(path: Path) -> list[dict[str, Any]]:
    """results.csv back as rows, numbers as numbers. Ids stay text: Ray's trial id "4e095_00000" is a
    number to Python's float() (underscores group digits: 4e9500000 = inf), and node ids are hex."""
    if not path.exists():
        return []

    def value(key: str, v: str) -> Any:
        if key in ("trial_id", "node_id") or "_" in v:
            return v
        try:
            return float(v) if any(c in v for c in ".eE") or v in ("nan", "inf") else int(v)
        except ValueError:
            return v

    with open(path, newline="", encoding="utf-8") as f:
        return [{k: value(k, v) for k, v in row.items()} for row in csv.DictReader(f)]


class ResultsWriter(tune.Callback):
    def __init__(self, run_dir: Path, searched: list[str], extra_metrics: list[str], reports_per_trial: int,
                 base: dict[str, Any], store: Any = None):
        self.run_dir = Path(run_dir)
        self.store = store  # trainables.storage.Storage; None: run_dir is all there is
        self.searched = searched
        self.extra_metrics = extra_metrics
        self.reports_per_trial = reports_per_trial
        self.base = base
        self.disk_full = False

    def _trial_dir(self, trial: Any) -> Path:
        d = self.run_dir / "trials" / trial.trial_id
        d.mkdir(parents=True, exist_ok=True)
        return d

    @functools.cached_property
    def space(self) -> dict[str, Any]:
        """The sweep's search space, validated once (it was validated whole before launch), not on every write."""
        from trainables.schema import SearchConfig

        return SearchConfig.model_validate(self.base.get("search") or {}).space

    def rows(self, trials: list[Any]) -> list[dict[str, Any]]:
        from trainables.schema import tied_values

        space = self.space
        trial_dir = self.run_dir / "trials"
        return [trial_row(t, self.searched, self.extra_metrics, self.reports_per_trial, tied_values(t.config, space),
                          ended=trial_ended(trial_dir / t.trial_id), error_copy=trial_dir / t.trial_id / "error.txt")
                for t in trials]

    def _ended(self, trial: Any, how: str) -> None:
        """Mark the trial ended, first thing: a kill a moment later must not leave it to be trained again
        (a file, so that a resumed sweep and the resumed trial itself know it)."""
        atomic_write_text(self._trial_dir(trial) / ENDED, how)

    def write(self, trials: list[Any], final: bool = False) -> None:
        if self.disk_full:  # the sweep is stopping for it: the last table that fitted stays
            return
        write_csv(self.run_dir / "results.csv", self.rows(trials))
        if self.store is not None:
            self.store.push(every_s=0 if final else PUSH_EVERY_S)

    def _stop_if_disk_full(self, trial: Any, errored: bool = False) -> None:
        """A trial that failed for want of disk space: every other would too. Stop the sweep (the driver
        says so in one line, harness/diskfull.py) instead of retrying and failing them one by one."""
        from harness.diskfull import DiskFull, says_full

        if not self.disk_full and trial.error_file and Path(trial.error_file).exists():
            self.disk_full = says_full(error_summary(Path(trial.error_file).read_text(errors="replace"))[1])
        if self.disk_full:
            raise DiskFull(str(self.run_dir), errored)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from trainables.schema import resolve

        if trial_ended(self._trial_dir(trial)) == "error":  # --retry-errored runs it again
            (self._trial_dir(trial) / ENDED).unlink(missing_ok=True)
        full = resolve(self.base, trial.config, self.space)
        atomic_write_text(self._trial_dir(trial) / "config.json", json.dumps(full, indent=2, default=str))
        self.write(trials)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        # Its last report (the final step, or the scheduler stops it here: Ray sets done before the callbacks)
        # ends the trial now, not when Ray gets round to on_trial_complete.
        if result.get("done") or ("total_steps" in result and result.get("step", 0) >= result["total_steps"]):
            self._ended(trial, "complete")
        entry = {k: result[k] for k in HISTORY_KEYS + self.extra_metrics if k in result}
        path = self._trial_dir(trial) / "metrics.jsonl"
        history = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
        if "report" in entry and result.get("resumed_from_report") == entry["report"] and any(
                h.get("report") == entry["report"] for h in history):
            self.write(trials)  # a finished trial resumed only to say its last report again
            return
        # A trial resumed from a checkpoint repeats the reports made after it: the new ones replace them.
        history = [h for h in history if h.get("report", 0) < entry.get("report", math.inf)] + [entry]
        atomic_write_text(path, "".join(json.dumps(h) + "\n" for h in history))
        self.write(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, "complete")
        self.write(trials)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._stop_if_disk_full(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._stop_if_disk_full(trial, errored=True)  # before the marker: one that failed for want of space runs later
        self._ended(trial, "error")
        # Ray keeps the traceback in its session dir; keep a copy with the trial's other files.
        if trial.error_file and Path(trial.error_file).exists():
            atomic_write_text(self._trial_dir(trial) / "error.txt", Path(trial.error_file).read_text(errors="replace"))
        self.write(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.write(trials, final=True)


def write_best(run_dir: Path, rows: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """best.yaml: the best finished trial's full resolved config and its metrics."""
    scored = [r for r in rows if isinstance(r.get(metric), (int, float)) and r["status"] != "ERROR"]
    if not scored:
        return None
    best = (min if mode == "min" else max)(scored, key=lambda r: r[metric])
    config_file = Path(run_dir) / "trials" / best["trial_id"] / "config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    doc = {"trial_id": best["trial_id"], "metric": metric, "value": best[metric], "config": config}
    atomic_write_text(Path(run_dir) / "best.yaml", yaml.safe_dump(doc, sort_keys=False))
    return best
