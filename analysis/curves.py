"""Learning curves, objective-vs-cost Pareto fronts, and the compute early stopping saved.

Savings estimate: a trial stopped after k of its reports would have run to the longest run's
report count K (the maximum training_iteration any trial of the sweep reached). Its full cost
is its own per-report rate times K: tokens = tokens_seen / k * K; seconds = its one-off start-up
(time_total_s - train_seconds: model load, data) + train_seconds / k * K, so the start-up is not
extrapolated (without train_seconds in the history: time_total_s / k * K). Finished and failed
trials cost what they cost. Saved = sum(full) - sum(actual).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.load import Sweep, finite
from analysis.stats import is_tie

STATUS_STYLE = {"TERMINATED": ("C0", "-"), "EARLY_STOPPED": ("C3", "--"), "ERROR": ("k", ":"), "RUNNING": ("C7", "-.")}


def learning_curves(sweep: Sweep, path: Path, metric: str = "eval_loss") -> Path | None:
    """eval_loss vs tokens_seen, one line per trial; early-stopped dashed and ended with an x."""
    import matplotlib.pyplot as plt

    hists = {t: h for t, h in sweep.histories.items() if metric in h and len(h)}
    if not hists:
        return None
    status = dict(zip(sweep.results["trial_id"].astype(str), sweep.results["status"], strict=False))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x_key = "tokens_seen" if all("tokens_seen" in h for h in hists.values()) else "training_iteration"
    seen = set()
    for tid, h in hists.items():
        st = status.get(tid, "RUNNING")
        color, ls = STATUS_STYLE.get(st, ("C7", "-"))
        label = st.lower().replace("_", "-") if st not in seen else None
        seen.add(st)
        ax.plot(h[x_key], h[metric], ls=ls, color=color, alpha=0.75, lw=1.2, label=label)
        if st in ("EARLY_STOPPED", "ERROR"):
            ax.plot(h[x_key].iloc[-1], h[metric].iloc[-1], "x", color=color, ms=7)
    best = best_trial(sweep)
    if best is not None and best in hists:
        h = hists[best]
        ax.plot(h[x_key], h[metric], color="C2", lw=2.5, label=f"best ({best})")
    ax.set_xlabel(x_key.replace("_", " "))
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{sweep.name}: learning curves ({len(hists)} trials)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    """Objective vs each cost column (finished trials), front highlighted; plus the front as a table."""
    import matplotlib.pyplot as plt

    costs = [c for c in ("trainable_params", "train_seconds", "tokens_seen") if c in sweep.costs]
    fin = sweep.finished
    fin = fin[fin[sweep.metric].map(finite)] if sweep.metric in fin else fin.iloc[0:0]
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
        for _, row in sub[mask].iterrows():
            front_rows.append({"cost": c, "cost value": row[c], "trial_id": row["trial_id"],
                               sweep.metric: row[sweep.metric],
                               **{p.removeprefix("config/"): row[p] for p in sweep.param_columns}})
    axes.flat[0].legend(fontsize=8)
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
        if r["status"] == "EARLY_STOPPED" and 0 < k < max_reports:
            train_s = _last(h, "train_seconds")
            if finite(train_s) and 0 < train_s <= secs:
                f_s = (secs - train_s) + train_s / k * max_reports
            else:
                f_s = secs / k * max_reports
            f_t = toks / k * max_reports
            rows.append({"trial_id": r["trial_id"], "reports": k, "of": max_reports, "seconds": secs,
                         "est. full seconds": f_s, "tokens": toks, "est. full tokens": f_t})
        else:
            f_s, f_t = secs, toks
        act_s, full_s, act_t, full_t = act_s + secs, full_s + f_s, act_t + toks, full_t + f_t
    return Savings(pd.DataFrame(rows), max_reports, act_s, full_s, act_t, full_t, len(rows))
