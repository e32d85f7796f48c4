"""The run directory policy: one sweep per directory, one live driver per directory, resume only what
this sweep started, and what the directory records of how the sweep was launched (sweep.yaml).
Refusals are ConfigErrors (exit 2), each one line naming the field and the way out.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from harness.config import ConfigError, SweepConfig
from trainables.storage import Storage

# Written into sweep.yaml beside the config. metric_directions: every metric the sweep produces -> min / max
# (None: a count or diagnostic), as the training loop and the evaluators declare them; the analysis reads it.
META_KEYS = ("command", "git_commit", "hardware", "metric_directions")


def run_metadata(argv: list[str]) -> dict[str, str]:
    """How this sweep was launched: the exact command, the code version, the machine."""
    import platform
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except ImportError:
        gpu = "unknown"
    return {
        "command": "python -m harness.sweep " + " ".join(shlex.quote(a) for a in argv),
        "git_commit": commit or "unknown",
        "hardware": f"{platform.machine()}, {os.cpu_count()} CPUs, {gpu}; {platform.platform()}",
    }


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def run_state(store: Storage) -> tuple[int, int]:
    """(trials finished, trials recorded) in an earlier run's results.csv."""
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(store.read_text("results.csv") or "")))
    return sum(r.get("status") in ("TERMINATED", "EARLY_STOPPED", "ERROR") for r in rows), len(rows)


def open_storage(cfg: SweepConfig) -> Storage:
    """The sweep's storage, with run_dir as the local copy of a URI; an unreachable URI is a config error."""
    try:
        return Storage(cfg.storage, mirror=cfg.run_dir)
    except (OSError, ValueError) as e:  # pyarrow: unknown scheme, no credentials, no network
        raise ConfigError([f"output.dir: cannot open {cfg.storage} ({str(e).splitlines()[0]}); check the URI, the "
                           "credentials (e.g. AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS) and the network"]) from None


def hold_run_dir(cfg: SweepConfig) -> None:
    """This driver owns cfg.run_dir until it exits (harness/lock.py); another live driver there: exit 2."""
    from harness.lock import RunDirBusy, hold

    try:
        hold(cfg.run_dir)
    except RunDirBusy as e:
        raise ConfigError([str(e)]) from None


def _what_it_computes(doc: dict) -> dict:
    """A sweep config minus where it runs: resuming on another machine or cluster is the same sweep."""
    doc = {k: v for k, v in doc.items() if k not in (*META_KEYS, "ray")}
    doc["output"] = {k: v for k, v in (doc.get("output") or {}).items() if k != "mirror"}
    return doc


def check_run_dir(cfg: SweepConfig, resume: bool, n_trials: int, store: Storage) -> bool:
    """Refuse to mix two different sweeps in one place; offer to resume an unfinished run of this
    one (asked on a terminal, else named in the error). Returns whether to resume."""
    saved = store.read_text("sweep.yaml")
    where = cfg.storage
    if saved is None:
        if resume:
            raise ConfigError([f"--resume: {where} holds no sweep to resume; run without --resume"])
        if store.remote and (cfg.run_dir / "sweep.yaml").exists():
            raise ConfigError([f"output.mirror: {cfg.run_dir} holds files of a sweep that {where} does not; "
                               "delete that directory or set another output.mirror"])
        return False
    from trainables.secrets import redact_obj

    old = _what_it_computes(yaml.safe_load(saved) or {})
    new = _what_it_computes(redact_obj(cfg.model_dump(mode="json")))  # sweep.yaml holds it masked
    if old != new:
        a, b = _flat(old), _flat(new)
        keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        raise ConfigError([f"output.dir: {where} holds a different sweep (it differs in {shown}); pick another "
                           "name= or output.dir=, or delete that directory"
                           + ("; --resume needs the sweep file and overrides of the run it continues" if resume else "")])
    if resume:
        return True
    done, recorded = run_state(store)
    if done >= max(n_trials, recorded) > 0:
        raise ConfigError([f"output.dir: {where} already holds a finished run of this sweep ({done} trials); pick "
                           "another name= or output.dir= to run it again"])
    if sys.stdin.isatty():
        answer = input(f"{where} holds an unfinished run of this sweep ({done} of {n_trials} trials "
                       "finished). Resume it? [Y/n] ")
        if answer.strip().lower() in ("", "y", "yes"):
            return True
    raise ConfigError([f"output.dir: {where} holds an unfinished run of this sweep ({done} of {n_trials} trials "
                       "finished); add --resume to continue it, or pick another name= to start afresh"])


def prepare_resume(store: Storage) -> bool:
    """Repair what a kill left in Ray's state (harness/resume.py; a local or shared path only: Ray writes
    a URI's state in whole files); False when there is nothing to restore yet (killed before Ray saved
    its first state): the sweep then starts in the same place."""
    from ray import tune

    from harness.resume import ResumeError, ended_trials, repair

    if not store.remote:
        try:
            notes = repair(store.local / "tune", *ended_trials(store.local))
        except ResumeError as e:
            raise ConfigError([str(e)]) from None
        for note in notes:
            print(f"resume: {note}")
    if not tune.Tuner.can_restore(store.uri("tune")):
        print(f"resume: no trial state saved in {store.uri('tune')} yet; starting the sweep")
        return False
    return True


def claim_run_dir(cfg: SweepConfig, resume: bool, n_trials: int) -> tuple[Storage, bool]:
    """The sweep's storage and whether to resume (check_run_dir); a refusal releases the lock taken on an
    existing run directory (and removes what taking it created) before it is raised."""
    store = open_storage(cfg)
    try:
        return store, check_run_dir(cfg, resume, n_trials, store)
    except ConfigError:
        from harness.lock import release

        if cfg.run_dir.exists():  # made since this driver looked: a live driver there is the reason to give
            hold_run_dir(cfg)     # (two started at once on a new directory; the other wrote sweep.yaml)
        release(cfg.run_dir, tidy=True)
        raise


def open_run_dir(cfg: SweepConfig, store: Storage, resume: bool, argv: list[str]) -> bool:
    """Take the run directory (creating it) and either repair an interrupted run's state for --resume or
    record the new sweep in sweep.yaml (its resolved config, masked, and how it was launched). Returns
    whether Ray Tune restores (False: a resume that found no saved state starts the sweep afresh)."""
    hold_run_dir(cfg)  # creates run_dir; taken already when it existed
    if resume:
        store.pull()  # a URI's results, histories and Optuna study: resume on any machine
        return prepare_resume(store)
    from trainables.paths import atomic_write_text
    from trainables.secrets import redact_obj

    meta = {**run_metadata(argv), "metric_directions": cfg.directions()}
    doc = redact_obj({**cfg.model_dump(mode="json"), **meta})
    atomic_write_text(cfg.run_dir / "sweep.yaml", yaml.safe_dump(doc, sort_keys=False))
    write_pool_scores(cfg)
    store.push()
    return False


def write_pool_scores(cfg: SweepConfig) -> Path | None:
    """selection/pool_scores.csv: every pool example's id, lengths and score (POOL_COLUMNS), so the report
    can draw the pool's length/score plane with each trial's selected_ids.json on it (analysis reads files
    only). Written for a training sweep whose pool carries scores; the pool of the base config (a searched
    data.* changes it per trial)."""
    import csv
    import io

    from trainables.data.pipeline import split_pool
    from trainables.data.selection.common import POOL_COLUMNS, pool_rows
    from trainables.paths import atomic_write_text

    if cfg.eval.only:
        return None
    pool = split_pool(cfg.data)[0]
    if all(e.score is None for e in pool):
        return None
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=POOL_COLUMNS)
    writer.writeheader()
    writer.writerows(pool_rows(pool))
    path = cfg.run_dir / "selection" / "pool_scores.csv"
    atomic_write_text(path, buf.getvalue())
    return path


def resume_hint(argv: list[str]) -> str:
    """The command that continues this sweep (the launch command with --resume)."""
    again = run_metadata(argv)["command"]
    return f"{again}{'' if '--resume' in again else ' --resume'}"
