"""Optional: log the report's tables and figures to an offline W&B run under the sweep dir.

Only when sweep.yaml has wandb.enabled. The report run's id is the sweep's own (report_run_id), so running
the report again replaces the local copy and, once synced, updates the same W&B run instead of adding
one. Any failure (no wandb installed, a broken install, a
sandbox that forbids the service process) becomes one line in the report, never an exception:
the report on disk is the product, W&B a copy.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd


def report_run_id(name: str, trial_ids: list[str]) -> str:
    """"report-<sweep>-<experiment>": <experiment> is the prefix Ray gives every trial id of one sweep
    ("8c6fd" of 8c6fd_00000), so two sweeps of one name in one project never share a report run; stable
    across reruns of the report and copies of the sweep directory."""
    prefixes = sorted({t.split("_", 1)[0] for t in trial_ids if "_" in t})
    raw = f"report-{name}" + (f"-{prefixes[0]}" if prefixes else "")
    return re.sub(r"[^A-Za-z0-9_-]+", "-", raw)[:64]


def log_report(sweep_config: dict[str, Any], sweep_dir: Path, name: str, tables: dict[str, pd.DataFrame],
               figures: list[Path], report_md: Path, run_id: str | None = None) -> str:
    """Return a one-line status for the report. run_id: report_run_id() of the sweep."""
    cfg = sweep_config.get("wandb") or {}
    if not cfg.get("enabled"):
        return "W&B: disabled in sweep.yaml."
    saved = {k: os.environ.get(k) for k in ("WANDB_MODE", "WANDB_SILENT", "WANDB_DIR")}
    try:
        import wandb

        # Offline whatever the sweep used: the report must not wait on, or fail for, the network.
        os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
        wdir = sweep_dir / "wandb"
        wdir.mkdir(parents=True, exist_ok=True)
        run_id = run_id or report_run_id(name, [])
        for old in wdir.glob(f"offline-run-*-{run_id}"):  # the previous report: this one replaces it
            shutil.rmtree(old, ignore_errors=True)
        run = wandb.init(project=cfg.get("project") or "lora-sweeps", entity=cfg.get("entity"), dir=str(sweep_dir),
                         id=run_id, resume="allow", name=f"{name}-report", group=name, job_type="analysis",
                         mode="offline", reinit="create_new")
        try:
            for tname, df in tables.items():
                run.log({f"table/{tname}": wandb.Table(dataframe=df.astype(str))})
            for fig in figures:
                run.log({f"figure/{fig.stem}": wandb.Image(str(fig))})
            run.save(str(report_md), base_path=str(report_md.parent), policy="now")
            where = run.dir
        finally:
            run.finish()
        return f"W&B: tables and figures logged to an offline run in {Path(where).parent} (`wandb sync` to upload)."
    except Exception as e:  # noqa: BLE001 - see module docstring
        return f"W&B: not logged ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})."
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
