"""Ablation table: per factor and level, mean / std / 95% CI / n of each metric, and the
difference to a baseline level with a significance test (analysis.stats) and a noise marker.

Which trials count: finished ones (status TERMINATED). An early-stopped trial's metric is its
value at the rung where it was stopped, not comparable with runs that trained to the end,
so it is counted in the `stopped` column instead; failed (ERROR) and RUNNING trials likewise.
With several factors, a level's numbers average over the other factors' levels (a marginal);
with an unbalanced design (random / optuna search) that marginal mixes in the other factors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import yaml

from analysis.load import SEED_PATH, Sweep
from analysis.stats import compare, pooled_sd, summarize

MAX_LEVELS = 6  # a continuous factor with more distinct values is binned
N_BINS = 3
WITHIN_NOISE = "≈ within noise"
NOT_TESTABLE = "not testable"
BEYOND_NOISE = ("better", "worse", "higher", "lower")  # verdicts of a difference larger than the noise


def _sort_key(v: Any) -> tuple:
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


@dataclass
class Levels:
    labels: pd.Series  # per results row: the level label (str), NaN where the value is missing
    order: list[str]
    ranges: dict[str, tuple[float, float]] | None = None  # binned continuous factor: label -> (min, max)

    @property
    def binned(self) -> bool:
        return self.ranges is not None


def levels_of(sweep: Sweep, path: str) -> Levels:
    col = sweep.results[f"config/{path}"]
    p = sweep.space.get(path)
    distinct = sorted(col.dropna().unique().tolist(), key=_sort_key)
    numeric = pd.api.types.is_numeric_dtype(col)
    if numeric and len(distinct) > MAX_LEVELS and (p is None or p.kind in ("uniform", "loguniform", "int")):
        # Continuous factor: quantile bins (in log space for loguniform) so each level has several runs.
        use_log = p is not None and p.log and bool((col.dropna() > 0).all())
        x = np.log(col.astype(float)) if use_log else col.astype(float)
        codes = pd.qcut(x, N_BINS, labels=False, duplicates="drop")
        ranges, names = {}, {}
        for k in sorted(codes.dropna().unique()):
            vals = col[codes == k].astype(float)
            names[k] = f"{_fmt(vals.min())}–{_fmt(vals.max())}"
            ranges[names[k]] = (float(vals.min()), float(vals.max()))
        labels = codes.map(lambda k: names.get(k, np.nan)).astype(object)
        return Levels(labels, list(ranges), ranges=ranges)
    if p is not None and p.values:  # keep the order the sweep file gave
        order = [_label(v) for v in p.values if _label(v) in {_label(d) for d in distinct}]
        order += [_label(v) for v in distinct if _label(v) not in order]
    else:
        order = [_label(v) for v in distinct]
    return Levels(col.map(lambda v: _label(v) if pd.notna(v) else np.nan).astype(object), order)


def _label(v: Any) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return str(v)


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def pick_baseline(sweep: Sweep, path: str, levels: Levels, requested: Any = None) -> str:
    """The named level if given (and present), else the configured default's level, else the first."""
    want = requested if requested is not None else sweep.base_value(path)
    if want is not None:
        if levels.binned:
            try:
                w = float(want)
                # The bin whose range holds the default, else the nearest bin.
                return min(levels.ranges, key=lambda lab: max(levels.ranges[lab][0] - w, w - levels.ranges[lab][1], 0))
            except (TypeError, ValueError):
                pass
        else:
            for cand in (_label(want), _label(yaml.safe_load(str(want))) if isinstance(want, str) else None):
                if cand in levels.order:
                    return cand
    return levels.order[0]


def noise_sd(sweep: Sweep, metric: str) -> float:
    """Seed-to-seed noise: pooled std of finished runs sharing every non-seed config value, over
    groups that ran more than one seed. Repeats with the same seed measure nondeterminism only
    (often exactly 0), so they do not count."""
    fin = sweep.finished
    seed_col = f"config/{SEED_PATH}" if f"config/{SEED_PATH}" in fin else ("seed" if "seed" in fin else None)
    if metric not in fin or not len(fin) or seed_col is None:
        return math.nan
    keys = [c for c in sweep.param_columns if c != seed_col]
    groups = fin.groupby([fin[k].astype(str) for k in keys]) if keys else [("all", fin)]
    return pooled_sd([g[metric].tolist() for _, g in groups if g[seed_col].astype(str).nunique() > 1])


@dataclass
class Ablation:
    long: pd.DataFrame  # one row per factor x level x metric, every statistic
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # per factor, for the report
    baselines: dict[str, str] = field(default_factory=dict)
    noise: dict[str, float] = field(default_factory=dict)
    binned: list[str] = field(default_factory=list)

    def beyond_noise(self, factor: str, metric: str) -> tuple[int, int]:
        """(levels whose difference to the baseline exceeds the noise, levels compared) of one factor."""
        if self.long.empty:
            return 0, 0
        rows = self.long[(self.long["factor"] == factor) & (self.long["metric"] == metric) & ~self.long["baseline"]]
        return int(rows["verdict"].isin(BEYOND_NOISE).sum()), len(rows)


def _verdict(c: Any, mode: str | None) -> str:
    if c.within_noise is None:
        return NOT_TESTABLE
    if c.within_noise:
        return WITHIN_NOISE
    if mode is None:
        return "higher" if c.diff > 0 else "lower"
    return "better" if (c.diff < 0) == (mode == "min") else "worse"


def ablation(sweep: Sweep, baseline: dict[str, Any] | None = None, method: str = "welch") -> Ablation:
    baseline = baseline or {}
    res = sweep.results
    metrics = [m for m in sweep.metrics if m in res]
    noise = {m: noise_sd(sweep, m) for m in metrics}
    rows, out = [], Ablation(pd.DataFrame())
    out.noise = noise
    for path in sweep.factors:
        lv = levels_of(sweep, path)
        if lv.binned:
            out.binned.append(path)
        base = pick_baseline(sweep, path, lv, baseline.get(path))
        out.baselines[path] = base
        fin = res["status"] == "TERMINATED"
        for level in lv.order:
            at = lv.labels == level
            counts = {s: int((at & (res["status"] == s)).sum()) for s in ("EARLY_STOPPED", "ERROR", "RUNNING")}
            for m in metrics:
                vals = res.loc[at & fin, m].astype(float).dropna().tolist()
                base_vals = res.loc[(lv.labels == base) & fin, m].astype(float).dropna().tolist()
                s = summarize(vals)
                c = compare(base_vals, vals, noise_sd=noise[m], method=method) if level != base else None
                rows.append({
                    "factor": path, "level": level, "baseline": level == base, "metric": m,
                    "n": s.n, "mean": s.mean, "std": s.std, "ci_low": s.ci_low, "ci_high": s.ci_high,
                    "diff": c.diff if c else math.nan, "diff_ci_low": c.ci_low if c else math.nan,
                    "diff_ci_high": c.ci_high if c else math.nan, "p": c.p if c else math.nan,
                    "test": c.test if c else "", "verdict": _verdict(c, sweep.direction(m)) if c else "baseline",
                    "stopped_early": counts["EARLY_STOPPED"], "failed": counts["ERROR"], "running": counts["RUNNING"],
                })
    out.long = pd.DataFrame(rows)
    for path in sweep.factors:
        out.tables[path] = factor_table(out.long[out.long["factor"] == path], sweep)
    return out


def _pm(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.4g}" if not math.isfinite(std) else f"{mean:.4g} ± {std:.2g}"


def _ci(lo: float, hi: float) -> str:
    return f"[{lo:.4g}, {hi:.4g}]" if math.isfinite(lo) else "–"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def factor_table(long: pd.DataFrame, sweep: Sweep) -> pd.DataFrame:
    """Report table of one factor: objective in full, the other metrics as mean ± std."""
    obj = sweep.metric
    rows = []
    for level, g in long.groupby("level", sort=False):
        o = g[g["metric"] == obj]
        r: dict[str, Any] = {"level": f"{level} (baseline)" if g["baseline"].iloc[0] else level}
        first = g.iloc[0]
        r["n"] = int(o["n"].iloc[0]) if len(o) else int(first["n"])
        r["stopped"], r["failed"] = int(first["stopped_early"]), int(first["failed"])
        if int(first["running"]):
            r["running"] = int(first["running"])
        if len(o):
            o = o.iloc[0]
            r[f"{obj} mean ± sd"] = _pm(o["mean"], o["std"])
            r["95% CI"] = _ci(o["ci_low"], o["ci_high"])
            r["Δ vs baseline"] = "" if o["baseline"] else (f"{o['diff']:+.3g}" if math.isfinite(o["diff"]) else "–")
            r["p"] = "" if o["baseline"] else _p(o["p"])
            r["test"] = o["test"]
            r["verdict"] = "" if o["baseline"] else o["verdict"]
        for _, m in g[g["metric"] != obj].iterrows():
            r[m["metric"]] = _pm(m["mean"], m["std"])
        rows.append(r)
    return pd.DataFrame(rows).astype(object).fillna("")
