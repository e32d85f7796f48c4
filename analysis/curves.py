"""Learning curves, objective-vs-cost Pareto fronts, and the compute early stopping saved.

Savings estimate: a stopped trial's full budget is its own planned training tokens, train_tokens (its
subset's tokens per epoch) x its epochs: reports are not evenly spaced in tokens (report 2 of 4 can
come at step 12 of 25), so tokens seen scaled by reports is not its budget. Its full seconds are its
one-off start-up (time_total_s - train_seconds: model load, data) plus train_seconds scaled by the
same token share. Only when train_tokens is not recorded: step / total_steps from its history, and
for older sweep directories without either, the longest run's report count. Finished and failed
trials cost what they cost. Saved = sum(full) - sum(actual).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import SEED_PATH, Sweep, _short, finite
from analysis.stats import is_tie

STATUS_STYLE = {"TERMINATED": ("C0", "-"), "EARLY_STOPPED": ("C3", "--"), "ERROR": ("k", ":"), "RUNNING": ("C7", "-.")}


def config_label(sweep: Sweep, row: pd.Series) -> str:
    """A trial's searched values in short form ("r=16, lr=0.0003"): what tells its curve from the others'.
    Tied parameters are left out (they follow the one they are tied to); the seed is kept when it varies."""
    parts = []
    for col in sweep.param_columns:
        path = col.removeprefix("config/")
        if sweep.is_tied(path) or sweep.results[col].dropna().astype(str).nunique() < 2:
            continue
        v = row[col]
        parts.append(f"{'seed' if path == SEED_PATH else path.rsplit('.', 1)[-1]}={_short(v)}")
    return ", ".join(parts) or str(row["trial_id"])


def _level_colors(sweep: Sweep) -> dict[str, Any]:
    """Colour per level of the first searched factor (viridis, in the level's own order): trials at one
    level share a colour, neighbouring levels get neighbouring colours."""
    import matplotlib

    factors = sweep.factors
    if not factors:
        return {}
    col = sweep.results[f"config/{factors[0]}"].dropna()
    try:
        levels = sorted(col.unique(), key=float)
    except (TypeError, ValueError):
        levels = sorted(col.astype(str).unique())
    cmap = matplotlib.colormaps["viridis"]
    return {str(v): cmap(i / max(len(levels) - 1, 1) * 0.9) for i, v in enumerate(levels)}


def learning_curves(sweep: Sweep, path: Path, metric: str = "eval_loss") -> Path | None:
    """metric vs tokens_seen, one line per trial labelled by its configuration and coloured by the level of
    the first searched factor; early-stopped dashed and ended with an x, failed dotted, the best thick."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    hists = {t: h for t, h in sweep.histories.items() if metric in h and len(h)}
    if not hists:
        return None
    rows = {str(r["trial_id"]): r for _, r in sweep.results.iterrows()}
    colors, factor = _level_colors(sweep), (sweep.factors or [None])[0]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    x_key = "tokens_seen" if all("tokens_seen" in h for h in hists.values()) else "training_iteration"
    best, statuses, labelled = best_trial(sweep), set(), set()
    for i, (tid, h) in enumerate(hists.items()):
        row = rows.get(tid)
        st = str(row["status"]) if row is not None else "RUNNING"
        statuses.add(st)
        color = colors.get(str(row[f"config/{factor}"]), f"C{i % 10}") if row is not None and factor else f"C{i % 10}"
        label = (config_label(sweep, row) if row is not None else tid) + (" (best)" if tid == best else "")
        _plot_curve(ax, h[x_key], h[metric], st, color, tid == best, None if label in labelled else label)
        labelled.add(label)
    handles, labels = ax.get_legend_handles_labels()
    for st in ("EARLY_STOPPED", "ERROR"):  # what a dashed line and an x mean
        if st in statuses:
            handles.append(Line2D([], [], color="0.3", ls=STATUS_STYLE[st][1], marker="x"))
            labels.append(st.lower().replace("_", "-") + " (x: last report)")
    ax.set_xlabel(x_key.replace("_", " "))
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(handles, labels, fontsize=7, ncol=2 if len(labels) > 12 else 1, loc="best",
              title=f"colour: {factor}" if factor else None, title_fontsize=7)
    ax.set_title(f"{sweep.name}: learning curves ({len(hists)} trials)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_curve(ax: Any, x: pd.Series, y: pd.Series, status: str, color: str, best: bool, label: str | None) -> None:
    """One trial's line: styled by its status, thick when best, an x at the last report when it was cut short."""
    ax.plot(x, y, ls=STATUS_STYLE.get(status, ("C7", "-"))[1], color=color, alpha=0.85, lw=2.8 if best else 1.3,
            label=label)
    if status in ("EARLY_STOPPED", "ERROR"):
        ax.plot(x.iloc[-1], y.iloc[-1], "x", color=color, ms=8, mew=2)


def best_trial(sweep: Sweep) -> str | None:
    """Best finished trial by the objective; an early-stopped one only if nothing finished; None when every
    finished trial reached the same value (a tie has no best)."""
    r = sweep.results
    if sweep.metric not in r or is_tie(r.loc[r["status"] == "TERMINATED", sweep.metric].astype(float).tolist()):
        return None
    for pool in (r[r["status"] == "TERMINATED"], r[r["status"] != "ERROR"]):
        pool = pool[pool[sweep.metric].map(finite)]
        if len(pool):
            idx = pool[sweep.metric].astype(float).idxmin() if sweep.mode == "min" else pool[sweep.metric].astype(float).idxmax()
            return str(r.loc[idx, "trial_id"])
    return None


def pareto_mask(objective: np.ndarray, cost: np.ndarray, mode: str) -> np.ndarray:
    """True where no other point is at least as good on both (objective by mode, cost lower) and better on one."""
    y = objective if mode == "min" else -objective
    keep = np.ones(len(y), dtype=bool)
    for i in range(len(y)):
        dominated = (y <= y[i]) & (cost <= cost[i]) & ((y < y[i]) | (cost < cost[i]))
        keep[i] = not dominated.any()
    return keep


def pareto(sweep: Sweep, path: Path) -> tuple[Path | None, pd.DataFrame]:
    """Objective vs each cost column that differs between finished trials, front highlighted, a legend per
    panel; plus the front as a table."""
    import matplotlib.pyplot as plt

    fin = sweep.finished
    fin = fin[fin[sweep.metric].map(finite)] if sweep.metric in fin else fin.iloc[0:0]
    # A cost every trial paid alike (tokens_seen when all ran the same budget) ranks nothing: no panel.
    costs = [c for c in ("trainable_params", "train_seconds", "tokens_seen") if c in sweep.costs
             and fin[c][fin[c].map(finite)].astype(float).nunique() > 1]
    if not costs or fin.empty:
        return None, pd.DataFrame()
    fig, axes = plt.subplots(1, len(costs), figsize=(4.3 * len(costs), 3.6), squeeze=False)
    front_rows = []
    for ax, c in zip(axes.flat, costs, strict=True):
        sub = fin[fin[c].map(finite)]
        y, x = sub[sweep.metric].to_numpy(float), sub[c].to_numpy(float)
        mask = pareto_mask(y, x, sweep.mode)
        ax.scatter(x[~mask], y[~mask], color="C7", s=20, label="dominated")
        order = np.argsort(x[mask])
        ax.plot(x[mask][order], y[mask][order], "o-", color="C2", label="Pareto front")
        if x.min() > 0 and x.max() / x.min() > 20:
            ax.set_xscale("log")
        ax.set_xlabel(c)
        ax.set_ylabel(sweep.metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        for _, row in sub[mask].iterrows():
            front_rows.append({"cost": c, "cost value": row[c], "trial_id": row["trial_id"],
                               sweep.metric: row[sweep.metric],
                               **{p.removeprefix("config/"): row[p] for p in sweep.param_columns}})
    fig.suptitle(f"{sweep.name}: {sweep.metric} vs cost (finished trials)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, pd.DataFrame(front_rows)


@dataclass
class Savings:
    table: pd.DataFrame  # per early-stopped trial: reports, actual and estimated full seconds / tokens
    max_reports: int
    actual_seconds: float
    full_seconds: float
    actual_tokens: float
    full_tokens: float
    n_stopped: int

    @property
    def saved_seconds(self) -> float:
        return self.full_seconds - self.actual_seconds

    @property
    def saved_fraction(self) -> float:
        return self.saved_seconds / self.full_seconds if self.full_seconds > 0 else math.nan


def _last(h: pd.DataFrame, key: str) -> float:
    if key not in h:
        return math.nan
    v = h[key].dropna()
    return float(v.iloc[-1]) if len(v) else math.nan


def _planned_tokens(sweep: Sweep, row: pd.Series, h: pd.DataFrame) -> float:
    """The training tokens a trial would have seen had it run to its end: its own subset's tokens per epoch
    (train_tokens) times its epochs; without train_tokens, tokens seen scaled by its steps (step / total_steps
    in its history). NaN when neither is recorded, or when the plan is below what it already saw (the two
    disagree: no estimate rather than a wrong one)."""
    seen = _last(h, "tokens_seen")
    epochs = _trial_value(sweep, str(row["trial_id"]), "train.epochs")
    per_epoch = float(row.get("train_tokens", math.nan))
    if finite(per_epoch) and finite(epochs):
        planned = per_epoch * float(epochs)
    else:
        step, total = _last(h, "step"), _last(h, "total_steps")
        planned = seen / step * total if finite(seen) and finite(step) and finite(total) and step > 0 else math.nan
    return planned if finite(planned) and not (finite(seen) and planned < seen) else math.nan


def _trial_value(sweep: Sweep, trial_id: str, path: str) -> Any:
    """A dotted config value of one trial: its resolved config.json, else its results column, else sweep.yaml."""
    d: Any = sweep.trial_configs.get(trial_id)
    for part in path.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    if d is not None:
        return d
    col = f"config/{path}"
    if col in sweep.results:
        hit = sweep.results.loc[sweep.results["trial_id"].astype(str) == trial_id, col]
        if len(hit) and pd.notna(hit.iloc[0]):
            return hit.iloc[0]
    return sweep.base_value(path)


def savings(sweep: Sweep) -> Savings:
    hists = sweep.histories
    max_reports = max((int(h["training_iteration"].max()) for h in hists.values() if len(h)), default=0)
    rows, act_s, full_s, act_t, full_t = [], 0.0, 0.0, 0.0, 0.0
    for _, r in sweep.results.iterrows():
        h = hists.get(str(r["trial_id"]))
        if h is None or not len(h):
            continue
        k = int(h["training_iteration"].max())
        secs = _last(h, "time_total_s")
        secs = secs if finite(secs) else float(r.get("train_seconds", math.nan))
        toks = _last(h, "tokens_seen")
        secs, toks = (secs if finite(secs) else 0.0), (toks if finite(toks) else 0.0)
        f_s, f_t = secs, toks
        if r["status"] == "EARLY_STOPPED":
            planned = _planned_tokens(sweep, r, h)
            if finite(planned) and toks > 0:
                share, basis = planned / toks, "planned tokens"
            elif 0 < k < max_reports:  # nothing says how long it was meant to run: the longest run's reports
                share, basis = max_reports / k, "reports"
            else:
                share, basis = 1.0, ""
            if share > 1:
                train_s = _last(h, "train_seconds")
                # Only the training part scales; the start-up (model load, data) is paid once.
                f_s = (secs - train_s) + train_s * share if finite(train_s) and 0 < train_s <= secs else secs * share
                f_t = toks * share
                rows.append({"trial_id": r["trial_id"], "reports": k, "of": planned_reports(sweep, r, max_reports),
                             "seconds": secs, "est. full seconds": f_s, "tokens": toks, "full tokens": f_t,
                             "full from": basis})
        act_s, full_s, act_t, full_t = act_s + secs, full_s + f_s, act_t + toks, full_t + f_t
    return Savings(pd.DataFrame(rows), max_reports, act_s, full_s, act_t, full_t, len(rows))


def planned_reports(sweep: Sweep, row: pd.Series, fallback: int) -> int:
    """Reports a trial's config plans (train.epochs × train.evals_per_epoch); fallback when not recorded."""
    tid = str(row["trial_id"])
    epochs, per = _trial_value(sweep, tid, "train.epochs"), _trial_value(sweep, tid, "train.evals_per_epoch")
    try:
        return int(epochs) * int(per) or fallback
    except (TypeError, ValueError):
        return fallback
