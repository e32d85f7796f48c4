"""The driver's console, apart from the live display (harness/display.py): is a person watching a terminal,
library noise filtered where it starts, the end-of-sweep table. Imports no Ray (the dry run and --help
stay fast).

Filtered: Ray's token-auth notice (authentication stays on) and its per-checkpoint INFO line in the
trials, bitsandbytes' CPU-kernel message unless a trial quantizes (nf4), progress bars of the trials
(never on a terminal) and, when piped, of the driver. Warnings and errors stay.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

_PROGRESS_BAR_ENV = ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")


def interactive(stream: TextIO | None = None) -> bool:
    """A person watches a terminal: live display and progress bars. CI logs and pipes get plain lines."""
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb" \
        and not os.environ.get("CI")


def quiet_driver() -> None:
    """Before Ray starts (its workers inherit the environment): no progress bars in the trials, whose
    output is never a terminal; no token-auth notice for the Ray instance (authentication stays on)."""
    import logging

    for name in _PROGRESS_BAR_ENV:
        os.environ.setdefault(name, "1")
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:  # "A new study created in RDB": the plan said it. Optuna sets its own level when first imported.
        import optuna

        optuna.logging.set_verbosity(logging.WARNING)
    except ImportError:
        pass


def plain_when_piped() -> None:
    """First thing in the driver: progress bars only on a terminal, and no colour codes in front of the
    trials' forwarded lines (Ray's RAY_COLOR_PREFIX) when the console is a log."""
    if not interactive(sys.stderr):
        for name in _PROGRESS_BAR_ENV:
            os.environ.setdefault(name, "1")
    if not interactive(sys.stdout):
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")


def worker_setup_hook(quantized: bool) -> Callable[[], None]:
    """Ray's worker_process_setup_hook: quiets library loggers in every trial worker before it imports
    anything. A closure, so that Ray ships it by value (it runs before a worker can import this project)."""

    def quiet_worker() -> None:
        import logging
        import os

        import ray

        # Ray Train logs every data-parallel report whole at INFO ("Reporting training result 1: TrainingReport(
        # ...)", thousands of characters), through a logger named after its file's path.
        context = os.path.join(os.path.dirname(ray.__file__), "train", "v2", "_internal", "execution", "context.py")
        logging.getLogger(context).setLevel(logging.WARNING)

        logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # "Checkpoint successfully created"
        # Ray Train's placement-group cleaner asks the state API every second whether its run is alive; without
        # the dashboard (ray[default]) each failed query is a warning (data-parallel trials).
        logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(
            logging.ERROR)
        if not quantized:  # its CPU 4-bit kernel is missing: only news to a trial that quantizes
            logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

    return quiet_worker


def duration(seconds: float) -> str:
    """"42s", "3m05s", "1h02m"."""
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def plain(text: str) -> str:
    """One line, no control characters (a trial's error message can hold newlines or escapes)."""
    return "".join(ch if ch.isprintable() else " " for ch in text.replace("\n", " | "))


def summarize(cfg: Any, rows: list[dict[str, Any]], out: TextIO | None = None) -> None:
    """The end-of-sweep table: every trial, never cut (piped, as wide as it needs), and the pool's
    malformed rows (bad_rows) when there were any."""
    from rich.console import Console
    from rich.table import Table

    out = out or sys.stdout
    metric = cfg.search.metric
    cols = list(dict.fromkeys(["trial_id", "status"] + [f"config/{p}" for p in cfg.search.space] + [
        metric, "best_eval_loss", "train_seconds", "tokens_seen", "tokens_per_second"]))
    table = Table(title=f"{cfg.name}: {len(rows)} trials ({metric}, {cfg.search.mode})")
    for c in cols:
        table.add_column(c.removeprefix("config/"), no_wrap=True)
    for r in rows:
        table.add_row(*[f"{r.get(c):.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols])
    # Off a terminal rich falls back to 80 columns and cuts every cell: give it all the width it needs.
    console = Console(file=out) if interactive(out) else Console(file=out, width=10_000, no_color=True,
                                                                 force_terminal=False)
    console.print(table)
    bad = max((r["bad_rows"] for r in rows if isinstance(r.get("bad_rows"), (int, float))), default=0)
    if bad:
        pool = max((r["pool_rows"] for r in rows if isinstance(r.get("pool_rows"), (int, float))), default=0)
        print(f"data: {int(bad):,}{f' of {int(pool):,}' if pool else ''} rows of {cfg.data.train} malformed and "
              "skipped (bad_rows in results.csv)", file=out)
