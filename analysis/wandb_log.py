"""Optional: log the report's tables and figures to an offline W&B run under the sweep dir.

Only when sweep.yaml has wandb.enabled. Any failure (no wandb installed, a broken install, a
sandbox that forbids the service process) becomes one line in the report, never an exception:
the report on disk is the product, W&B a copy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd


def log_report(sweep_config: dict[str, Any], sweep_dir: Path, name: str, tables: dict[str, pd.DataFrame],
               figures: list[Path], report_md: Path) -> str:
    """Return a one-line status for the report."""
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
        run = wandb.init(project=cfg.get("project") or "lora-sweeps", entity=cfg.get("entity"), dir=str(sweep_dir),
                         name=f"{name}-report", group=name, job_type="analysis", mode="offline",
                         reinit="create_new")
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
