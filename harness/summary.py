"""After the trials: best.yaml, the summary table, the analysis report, and the exit code that says how
the sweep ended (0 done, 1 every trial failed, 130 interrupted: harness.sweep's exit codes)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from harness.config import SweepConfig
from harness.console import summarize
from trainables.storage import Storage


def finish(cfg: SweepConfig, store: Storage, wall: float, resume_command: str, report: bool = True) -> int:
    """Everything the driver does once Tuner.fit returns; `resume_command` is printed when trials are left
    unfinished (Ctrl-C). Returns the exit code."""
    from harness.results import read_rows, write_best

    run_dir = cfg.run_dir
    store.pull()  # what the trials wrote to a URI (evaluation outputs), for best.yaml and the report
    rows = read_rows(run_dir / "results.csv")
    write_best(run_dir, rows, cfg.search.metric, cfg.search.mode)
    summarize(cfg, rows)
    stopped = sum(r["status"] == "EARLY_STOPPED" for r in rows)
    print(f"{len(rows)} trials in {wall:.0f} s ({stopped} stopped early); results: {run_dir / 'results.csv'}")
    interrupted = [r["trial_id"] for r in rows if r["status"] in ("INTERRUPTED", "RUNNING", "PENDING")]
    if interrupted:  # Ctrl-C: everything reported so far is saved; the rest goes on with --resume
        print(f"interrupted: {len(interrupted)} trial(s) unfinished, their checkpoints kept; continue with: "
              f"{resume_command}", file=sys.stderr)
        return 130
    if report:
        write_report(run_dir)
    store.push()
    if rows and all(r["status"] == "ERROR" for r in rows):
        print(f"error: every trial failed; see the error column of {run_dir / 'results.csv'}", file=sys.stderr)
        return 1
    return 0


def write_report(run_dir: Path) -> None:
    """The analysis report; a failure there must not cost the sweep's results."""
    try:
        from analysis import report
    except ImportError:
        return
    try:
        t = time.perf_counter()
        path = report.write_report([run_dir])
        print(f"report: {path} ({time.perf_counter() - t:.1f} s)")
    except Exception as e:  # noqa: BLE001 - the results are already on disk
        print(f"warning: report failed ({type(e).__name__}: {e}); rerun: python -m analysis.report {run_dir}",
              file=sys.stderr)
