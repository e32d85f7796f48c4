"""Make a killed sweep's Ray Tune state resumable before `Tuner.restore` reads it.

Ray Tune (2.60) writes the experiment state (trial list, each trial's latest checkpoint, the searcher)
to a staging directory and copies it into runs/<name>/tune/ in the background, every few seconds.
Measured on a smoke sweep (polling the copy every 50 ms), a `kill -9` of the driver can find it:
  - pointing at a checkpoint that keep-best-k pruning has just deleted (the trial has a newer one):
    Tuner.restore then fails that trial with "Could not recover from checkpoint";
  - cut mid-copy (invalid JSON): Tuner.restore fails altogether;
  - lagging behind a trial that ended since (Optuna was told, harness/optuna_search.py): Ray would
    train that trial's last steps again from the checkpoint it saved, or retry a trial that had failed.
`repair` fixes these from files on disk: a cut (or lagging) state file is replaced by Ray's staging copy
when this machine still has it (with the searcher's state saved beside it, so that the two agree), a
newer checkpoint takes the name the state expects (the trial goes on from its newest state; one that had
ended only says its last report again, trainables/trial.py), and a trial that had failed for good is
marked failed. `ended_trials` says which trials ended, from what the driver wrote before the kill.
A checkpoint that the saved state still lists but keep-best-k has deleted since is dropped from the list
(Ray would log a FileNotFoundError traceback trying to delete it again). A trial whose checkpoints all
came after the saved state (none listed) goes on from its newest one, not from its first step.
Besides that list and the trial's checkpoint count (Ray's own pickled objects, which Tuner.restore
unpickles anyway) only the plain-JSON parts of the state are read; anything unexpected leaves the directory as it is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from trainables.paths import atomic_write_text, trial_ended

UNFINISHED = ("RUNNING", "PENDING", "PAUSED")
_CKPT = re.compile(r"^checkpoint_(\d+)$")


def _index(name: str) -> int:
    """checkpoint_000003 -> 3; -1 for any other name."""
    m = _CKPT.match(name)
    return int(m.group(1)) if m else -1


class ResumeError(RuntimeError):
    """The saved state cannot be used; the message says what to do."""


def _load(path: Path) -> dict | None:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and "trial_data" in state else None


def staging_copies(name: str) -> list[Path]:
    """Ray's own copies of an experiment state file, in its session directories on this machine."""
    root = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray"
    return sorted(root.glob(f"session_*/artifacts/*/*/driver_artifacts/{name}"), key=lambda p: p.stat().st_mtime,
                  reverse=True)


def restore_from_staging(copy: Path, tune_dir: Path) -> None:
    """Ray's staging copy of an experiment state, with the searcher's state that Ray saved beside it:
    the copy in tune_dir may hold an older searcher, which fails on the first report of a trial it never
    suggested (KeyError in OptunaSearch.on_trial_result; docs/notes.md)."""
    stamp = copy.name.removeprefix("experiment_state-").removesuffix(".json")
    for name in (copy.name, f"searcher-state-{stamp}.pkl", f"search_gen_state-{stamp}.json"):
        if (copy.parent / name).is_file():
            shutil.copyfile(copy.parent / name, tune_dir / name)


def trials_of(state: dict) -> list[tuple[dict, dict]]:
    out = []
    for entry in state["trial_data"]:
        trial, meta = (json.loads(x) if isinstance(x, str) else x for x in entry[:2])
        out.append((trial, meta))
    return out


def _put(entry: list, index: int, obj: dict) -> None:
    """A changed trial (0) or run metadata (1) back into its trial_data entry, as Ray wrote it (a JSON string)."""
    entry[index] = json.dumps(obj) if isinstance(entry[index], str) else obj


def saved_state(tune_dir: Path, notes: list[str] | None = None) -> dict | None:
    """The experiment state Tuner.restore will read (the newest experiment_state-*.json in tune_dir),
    first brought up to date: Ray's staging copy on this machine replaces it when it is newer (written
    after the last background copy) or when the copy here was cut short by the kill."""
    notes = [] if notes is None else notes
    files = sorted(Path(tune_dir).glob("experiment_state-*.json"))
    if not files:
        return None
    newest = files[-1]
    state = _load(newest)
    for copy in staging_copies(newest.name):
        candidate = _load(copy)
        # The same experiment: its trials' directories are the ones in this run directory.
        if not candidate or not all((Path(tune_dir) / t["relative_logdir"]).is_dir() for t, _ in trials_of(candidate)):
            continue
        if state is None or (candidate != state and copy.stat().st_mtime > newest.stat().st_mtime):
            restore_from_staging(copy, Path(tune_dir))
            why = "was cut short by the kill" if state is None else "lagged behind Ray's own copy"
            notes.append(f"{newest.name} {why}; restored Ray's complete copy from {copy}")
            return candidate
        break
    if state is not None:
        return state
    if len(files) == 1:
        raise ResumeError(f"--resume: {newest} was cut short by the kill and no complete copy is left; "
                          "start afresh with another name=")
    newest.rename(newest.with_suffix(".json.cut"))
    notes.append(f"{newest.name} was cut short by the kill; resuming from the previous state "
                 f"({files[-2].name}); trials started after it run again")
    return saved_state(tune_dir, notes)


def _last_report(history: Path) -> dict:
    try:
        lines = history.read_text(encoding="utf-8").splitlines()
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}


def ended_trials(run_dir: Path) -> tuple[set[str], set[str]]:
    """(trials that ended complete, trials that failed for good) by the driver's records in run_dir: each
    trial's `.ended` marker (written the moment it ended), or a last report at its final step in
    metrics.jsonl, or its results.csv status."""
    from harness.results import read_rows

    complete, failed = set(), set()
    for row in read_rows(Path(run_dir) / "results.csv"):
        if row.get("status") in ("TERMINATED", "EARLY_STOPPED"):
            complete.add(str(row["trial_id"]))
        elif row.get("status") == "ERROR":
            failed.add(str(row["trial_id"]))
    for trial_dir in sorted((Path(run_dir) / "trials").glob("*/")):
        how = trial_ended(trial_dir)
        last = _last_report(trial_dir / "metrics.jsonl")
        if how == "complete" or ("total_steps" in last and last.get("step", 0) >= last["total_steps"]):
            complete.add(trial_dir.name)
        elif how == "error":
            failed.add(trial_dir.name)
    return complete, failed - complete


def _mark_failed(state: dict, failed: set[str]) -> list[str]:
    """Ray's saved state as if it had been saved after these trials failed: they stay failed on --resume
    (and --retry-errored runs them again)."""
    notes = []
    for entry in state["trial_data"]:
        trial = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
        if trial.get("trial_id") in failed and trial.get("status") in UNFINISHED:
            trial["status"] = "ERROR"
            _put(entry, 0, trial)
            notes.append(f"trial {trial['trial_id']}: had failed after the last saved state; kept as failed")
    return notes


def _forget_missing_checkpoints(state: dict) -> bool:
    """Drop from each unfinished trial's checkpoint list (Ray's _CheckpointManager, cloudpickled in the
    state as Ray saves it; Tuner.restore unpickles the same) the checkpoints that keep-best-k deleted
    after the state was saved: Ray would try to delete them again at the trial's next checkpoint and log
    a FileNotFoundError traceback. Returns whether anything changed."""
    from ray import cloudpickle
    from ray._common.utils import binary_to_hex, hex_to_binary

    changed = False
    for entry in state["trial_data"]:
        trial = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
        meta = json.loads(entry[1]) if isinstance(entry[1], str) else entry[1]
        blob = meta.get("checkpoint_manager")
        if trial.get("status") not in UNFINISHED or not (isinstance(blob, dict) and "value" in blob):
            continue
        manager = cloudpickle.loads(hex_to_binary(blob["value"]))
        listed = getattr(manager, "_checkpoint_results", None)
        if not isinstance(listed, list):
            continue
        kept = [r for r in listed if os.path.exists(r.checkpoint.path)]
        if len(kept) < len(listed):
            manager._checkpoint_results = kept
            blob["value"] = binary_to_hex(cloudpickle.dumps(manager))
            _put(entry, 1, meta)
            changed = True
    return changed


def _go_on_from_newest(tune_dir: Path, trial: dict, meta: dict, ended: bool) -> str | None:
    """The checkpoint an unfinished trial goes on from: the one the saved state names, unless keep-best-k
    pruned it since, or the trial had ended since (its final checkpoint, where it only reports its last
    result again, trainables/trial.py: its .ended marker, or no step left; from the saved one it would
    train its last steps again). The newer checkpoint takes the saved one's name. Returns a note."""
    wanted = (meta.get("last_result") or {}).get("checkpoint_dir_name")
    trial_dir = Path(tune_dir) / trial.get("relative_logdir", "")
    index = _index(wanted or "")
    if index < 0 or ((trial_dir / wanted).exists() and not ended):
        return None
    newer = sorted((d for d in trial_dir.glob("checkpoint_*") if _index(d.name) > index), key=lambda d: _index(d.name))
    if not newer:
        return None  # nothing newer to go on from: as saved (a pruned one: Ray records the trial as failed)
    if (trial_dir / wanted).exists():
        shutil.rmtree(trial_dir / wanted)  # older than the final one that takes its name
    newer[-1].rename(trial_dir / wanted)
    for stale in newer[:-1]:  # older than the one kept; Ray's state knows none of them
        shutil.rmtree(stale, ignore_errors=True)
    why = ("had ended after the last saved state; it reports its last result again from its final"
           if ended else f"{wanted} had been pruned after the last saved state; it goes on from its newer")
    return f"trial {trial['trial_id']}: {why} {newer[-1].name}"


def _saved_metrics(checkpoint: Path) -> dict | None:
    """The last report a checkpoint's state.pt (TrainState) holds; None when the kill cut it short."""
    import torch

    try:  # mmap: only the pickled dict is read, not the adapter and optimizer tensors
        saved = torch.load(checkpoint / "state.pt", map_location="cpu", mmap=True, weights_only=False)
    except Exception:  # noqa: BLE001 - missing, cut short or not ours: not a checkpoint to go on from
        return None
    metrics = saved.get("metrics") if isinstance(saved, dict) else None
    return dict(metrics) if isinstance(metrics, dict) and metrics else None


def _adopt_unlisted(tune_dir: Path, entry: list) -> str | None:
    """A trial that the saved state names no checkpoint of, though it saved some after that state (Ray
    saves it every 10 s or more; Tuner.restore would train the trial again from its first step): its
    newest whole checkpoint goes into Ray's checkpoint list (the pickled _CheckpointManager) and the
    trial's checkpoint count (its StorageContext, so the next one is numbered after it), as if the state
    had been saved after it. The older ones, which Ray would never prune, go. Returns a note."""
    from ray import cloudpickle
    from ray._common.utils import binary_to_hex, hex_to_binary
    from ray.train import Checkpoint
    from ray.train._internal.session import _TrainingResult

    trial, meta = (json.loads(x) if isinstance(x, str) else x for x in entry[:2])
    blobs = (trial.get("storage"), meta.get("checkpoint_manager"))
    if not all(isinstance(b, dict) and "value" in b for b in blobs):
        return None
    storage, manager = (cloudpickle.loads(hex_to_binary(b["value"])) for b in blobs)
    if manager.latest_checkpoint_result is not None:
        return None
    on_disk = sorted(Path(tune_dir, trial.get("relative_logdir", "")).glob("checkpoint_*"), key=lambda d: _index(d.name))
    newest = next(((d, m) for d in reversed(on_disk) if _index(d.name) >= 0 and (m := _saved_metrics(d))), None)
    if newest is None:
        return None
    checkpoint, metrics = newest
    result = _TrainingResult(Checkpoint(f"{storage.trial_fs_path}/{checkpoint.name}", storage.storage_filesystem),
                             {**metrics, "checkpoint_dir_name": checkpoint.name})
    manager._latest_checkpoint_result, manager._checkpoint_results = result, [result]
    storage.current_checkpoint_index = _index(checkpoint.name)
    blobs[0]["value"] = binary_to_hex(cloudpickle.dumps(storage))
    blobs[1]["value"] = binary_to_hex(cloudpickle.dumps(manager))
    _put(entry, 0, trial)
    _put(entry, 1, meta)
    for stale in on_disk:
        if stale != checkpoint:
            shutil.rmtree(stale, ignore_errors=True)
    return (f"trial {trial['trial_id']}: the saved state named none of its checkpoints; it goes on from "
            f"{checkpoint.name} (report {metrics.get('report', '?')})")


def repair(tune_dir: Path, finished: Iterable[str] = (), failed: Iterable[str] = ()) -> list[str]:
    """Fix what a kill can leave behind in Ray's experiment dir; return one note per fix. `finished`: the
    trials that had ended (run to their last step, or stopped by the scheduler); `failed`: those that had
    failed for good (ended_trials)."""
    notes: list[str] = []
    finished, failed = set(finished), set(failed)
    state = saved_state(Path(tune_dir), notes)
    if state is None:
        return notes
    try:
        trials = trials_of(state)
        marked = _mark_failed(state, failed)
    except (KeyError, TypeError, ValueError, IndexError):
        return notes + ["the saved experiment state has an unexpected layout; resuming it as it is"]
    notes += marked
    adopted = False
    for (trial, meta), entry in zip(trials, state["trial_data"], strict=True):
        if trial.get("status") not in UNFINISHED or trial.get("trial_id") in failed:
            continue
        note = _go_on_from_newest(Path(tune_dir), trial, meta, trial.get("trial_id") in finished)
        if note is None:
            try:
                note = _adopt_unlisted(Path(tune_dir), entry)
            except Exception:  # noqa: BLE001 - Ray's own objects: if they are not what 2.60 writes, leave them
                note = None
            adopted |= note is not None
        notes += [note] if note else []
    try:
        forgotten = _forget_missing_checkpoints(state)
    except Exception:  # noqa: BLE001 - Ray's own object, as Ray pickled it: if it is not what 2.60 writes, leave it
        forgotten = False
    if marked or forgotten or adopted:
        newest = sorted(Path(tune_dir).glob("experiment_state-*.json"))[-1]
        atomic_write_text(newest, json.dumps(state))
    return notes
