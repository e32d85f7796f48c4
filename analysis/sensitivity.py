"""Hyperparameter sensitivity: fANOVA and PED-ANOVA importances (Optuna) over all trials,
marginal-effect plots, and an interaction heat map of two parameters.

The importances run on an in-memory Optuna study rebuilt from results.csv with
`optuna.trial.create_trial`, distributions taken from the sweep's search space (log scale for
loguniform, categorical for choice/grid) or, without sweep.yaml, inferred from the values.
Trials used: every trial with a finite objective, early-stopped ones at the value they were
stopped with (as Ray's Optuna searcher itself saw them); failed trials are left out. The seed is
included when it varies: its importance is a yardstick for noise, not a tunable knob.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import SEED_PATH, Sweep, finite

MIN_TRIALS = 6  # below this an importance estimate is noise; the report says so instead
MAX_CELLS = 5  # bins per axis of the interaction heat map


@dataclass
class Sensitivity:
    importances: pd.DataFrame  # parameter, fanova, ped_anova (normalised to sum 1), kind
    n_trials: int
    notes: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    pair: tuple[str, str] | None = None


def _params(sweep: Sweep) -> list[str]:
    """Varied, untied parameters (the seed too, as a noise reference)."""
    out = list(sweep.factors)
    seed_col = f"config/{SEED_PATH}"
    if seed_col in sweep.results and sweep.results[seed_col].nunique() > 1:
        out.append(SEED_PATH)
    return out


def _usable(sweep: Sweep) -> pd.DataFrame:
    r = sweep.results
    ok = (r["status"] != "ERROR") & r[sweep.metric].map(finite) if sweep.metric in r else r["status"] == "_none_"
    return r[ok]


def distribution(sweep: Sweep, path: str, values: pd.Series) -> Any:
    """Optuna distribution of one parameter: from the search space, else inferred from the values."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    p = sweep.space.get(path)
    vals = values.dropna()
    numeric = pd.api.types.is_numeric_dtype(vals)
    if p is not None and p.kind in ("uniform", "loguniform"):
        lo, hi = min(p.low, float(vals.min())), max(p.high, float(vals.max()))
        return FloatDistribution(lo, hi, log=p.log)
    if p is not None and p.kind == "int":
        return IntDistribution(int(min(p.low, vals.min())), int(max(p.high, vals.max())))
    if p is None and numeric and vals.nunique() > 6:
        lo, hi = float(vals.min()), float(vals.max())
        return FloatDistribution(lo, hi, log=lo > 0 and hi / lo > 100)
    # choice / grid / seed / unknown: categorical over the values seen (optuna wants plain scalars)
    return CategoricalDistribution(sorted({_scalar(v) for v in vals}, key=lambda v: (str(type(v)), v)))


def _scalar(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        f = float(v)
        return int(f) if f.is_integer() else f
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    return str(v)


def build_study(sweep: Sweep, params: list[str]) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = _usable(sweep)
    dists = {p: distribution(sweep, p, rows[f"config/{p}"]) for p in params}
    study = optuna.create_study(direction="minimize" if sweep.mode == "min" else "maximize")
    for _, row in rows.iterrows():
        values = {}
        for p, d in dists.items():
            v = _scalar(row[f"config/{p}"])
            if isinstance(d, optuna.distributions.CategoricalDistribution):
                values[p] = v
            elif isinstance(d, optuna.distributions.IntDistribution):
                values[p] = int(v)
            else:
                values[p] = float(v)
        hist = sweep.histories.get(str(row["trial_id"]))
        inter = {}
        if hist is not None and "eval_loss" in hist and sweep.metric == "eval_loss":
            inter = {int(i): float(v) for i, v in zip(hist["training_iteration"], hist["eval_loss"], strict=False)
                     if finite(v)}
        study.add_trial(optuna.trial.create_trial(
            value=float(row[sweep.metric]), params=values, distributions=dists, intermediate_values=inter,
            user_attrs={"trial_id": str(row["trial_id"]), "status": row["status"]}))
    return study


def importances(sweep: Sweep) -> Sensitivity:
    from optuna.importance import (
        FanovaImportanceEvaluator,
        PedAnovaImportanceEvaluator,
        get_param_importances,
    )

    params = _params(sweep)
    rows = _usable(sweep)
    out = Sensitivity(pd.DataFrame(columns=["parameter", "fanova", "ped_anova"]), n_trials=len(rows))
    if not params:
        out.notes.append("No parameter was varied, so there is nothing to rank.")
        return out
    if len(rows) < MIN_TRIALS:
        out.notes.append(f"Importance needs more trials: {len(rows)} trial(s) with a value of {sweep.metric} "
                         f"(at least {MIN_TRIALS} are needed for a meaningful fANOVA / PED-ANOVA estimate).")
        return out
    study = build_study(sweep, params)
    table: dict[str, dict[str, float]] = {p: {} for p in params}
    evaluators = {"fanova": FanovaImportanceEvaluator(seed=0),
                  # PED-ANOVA compares the top target_quantile of trials with all; with few trials
                  # the default 10% is under one trial, so take at least two.
                  "ped_anova": PedAnovaImportanceEvaluator(target_quantile=max(0.1, 2 / len(rows)))}
    for name, ev in evaluators.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imp = get_param_importances(study, evaluator=ev, normalize=True)
            for p in params:
                table[p][name] = float(imp.get(p, 0.0))
        except Exception as e:  # an evaluator failing (e.g. degenerate data) must not sink the report
            out.notes.append(f"{name} could not be computed: {type(e).__name__}: {e}")
            for p in params:
                table[p][name] = math.nan
    df = pd.DataFrame([{"parameter": p, **v} for p, v in table.items()])
    df["kind"] = [("seed (noise reference)" if p == SEED_PATH else (sweep.space[p].kind if p in sweep.space else "?"))
                  for p in df["parameter"]]
    sort_by = "fanova" if df["fanova"].notna().any() else "ped_anova"
    out.importances = df.sort_values(sort_by, ascending=False, na_position="last").reset_index(drop=True)
    return out


def _axis(sweep: Sweep, path: str, values: pd.Series) -> tuple[np.ndarray, list[str] | None, bool]:
    """Plot positions of a parameter: numbers as they are (log flag for loguniform), categories as 0..k-1."""
    p = sweep.space.get(path)
    numeric = pd.api.types.is_numeric_dtype(values)
    categorical = not numeric or (p is not None and p.kind in ("choice", "grid")) or path == SEED_PATH
    if categorical:
        cats = [str(c) for c in sorted(values.dropna().unique(), key=lambda v: (str(type(v)), v))]
        return values.astype(str).map({c: i for i, c in enumerate(cats)}).to_numpy(float), cats, False
    log = bool(p is not None and p.log) or (p is None and (values > 0).all() and values.max() / values.min() > 100)
    return values.to_numpy(float), None, log


def marginal_plot(sweep: Sweep, params: list[str], path: Path) -> Path | None:
    """Objective vs each parameter; finished trials filled, early-stopped hollow; level means joined."""
    import matplotlib.pyplot as plt

    rows = _usable(sweep)
    if not params or rows.empty:
        return None
    n = len(params)
    cols = min(n, 3)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(4.2 * cols, 3.4 * math.ceil(n / cols)),
                             squeeze=False)
    y = rows[sweep.metric].astype(float).to_numpy()
    stopped = (rows["status"] == "EARLY_STOPPED").to_numpy()
    rng = np.random.default_rng(0)
    for ax, p in zip(axes.flat, params, strict=False):
        x, cats, log = _axis(sweep, p, rows[f"config/{p}"])
        jitter = rng.uniform(-0.08, 0.08, len(x)) if cats else 0.0
        ax.scatter(x[~stopped] + (jitter[~stopped] if cats else 0), y[~stopped], s=22, color="C0", label="finished")
        if stopped.any():
            ax.scatter(x[stopped] + (jitter[stopped] if cats else 0), y[stopped], s=22, facecolors="none",
                       edgecolors="C3", label="early-stopped")
        if cats:
            means = [np.nanmean(y[~stopped][x[~stopped] == i]) if (x[~stopped] == i).any() else np.nan
                     for i in range(len(cats))]
            ax.plot(range(len(cats)), means, "k_-", ms=18, lw=1, label="mean (finished)")
            ax.set_xticks(range(len(cats)), cats, rotation=30 if max(map(len, cats)) > 6 else 0)
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(p)
        ax.set_ylabel(sweep.metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{sweep.name}: marginal effect on {sweep.metric}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cells(sweep: Sweep, path: str, values: pd.Series) -> tuple[pd.Series, list[str]]:
    x, cats, log = _axis(sweep, path, values)
    if cats is not None:
        return pd.Series(x, index=values.index).astype(int).map(dict(enumerate(cats))), cats
    xs = np.log(x) if log else x
    k = min(MAX_CELLS, len(np.unique(xs)))
    edges = np.linspace(xs.min(), xs.max(), k + 1)
    idx = np.clip(np.searchsorted(edges, xs, side="right") - 1, 0, k - 1)
    tf = np.exp if log else (lambda v: v)
    labels = [f"{tf(edges[i]):.2g}–{tf(edges[i + 1]):.2g}" for i in range(k)]
    return pd.Series([labels[i] for i in idx], index=values.index), labels


def interaction_plot(sweep: Sweep, pair: tuple[str, str], path: Path) -> Path | None:
    """Mean objective in each cell of two parameters (binned when continuous), with run counts."""
    import matplotlib.pyplot as plt

    rows = _usable(sweep)
    # Early-stopped values belong to a shorter run; mixing them into a cell mean would blur the map.
    if (rows["status"] == "TERMINATED").sum() >= 2:
        rows = rows[rows["status"] == "TERMINATED"]
    if rows.empty:
        return None
    a, alab = _cells(sweep, pair[0], rows[f"config/{pair[0]}"])
    b, blab = _cells(sweep, pair[1], rows[f"config/{pair[1]}"])
    y = rows[sweep.metric].astype(float)
    grid = np.full((len(blab), len(alab)), np.nan)
    count = np.zeros_like(grid, dtype=int)
    for (ai, bi), g in y.groupby([a, b]):
        grid[blab.index(bi), alab.index(ai)] = g.mean()
        count[blab.index(bi), alab.index(ai)] = len(g)
    fig, ax = plt.subplots(figsize=(1.3 * len(alab) + 2.5, 0.9 * len(blab) + 1.8))
    cmap = "viridis_r" if sweep.mode == "min" else "viridis"  # better = brighter either way
    im = ax.imshow(grid, cmap=cmap, aspect="auto", origin="lower")
    lo, hi = np.nanmin(grid), np.nanmax(grid)
    for i in range(len(blab)):
        for j in range(len(alab)):
            if count[i, j]:
                # Dark text on the bright (better) end of the colour map, white on the dark end.
                bright = (grid[i, j] - lo) / (hi - lo + 1e-12)
                bright = 1 - bright if sweep.mode == "min" else bright
                ax.text(j, i, f"{grid[i, j]:.4g}\nn={count[i, j]}", ha="center", va="center", fontsize=7,
                        color="black" if bright > 0.5 else "white")
    ax.set_xticks(range(len(alab)), alab, rotation=30)
    ax.set_yticks(range(len(blab)), blab)
    ax.set_xlabel(pair[0])
    ax.set_ylabel(pair[1])
    fig.colorbar(im, ax=ax, label=f"mean {sweep.metric}")
    ax.set_title(f"{sweep.name}: interaction (finished trials)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def importance_plot(sens: Sensitivity, title: str, path: Path) -> Path | None:
    import matplotlib.pyplot as plt

    df = sens.importances
    if df.empty:
        return None
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(df) + 1.5))
    pos = np.arange(len(df))
    ax.barh(pos - 0.2, df["fanova"].fillna(0), height=0.4, label="fANOVA")
    ax.barh(pos + 0.2, df["ped_anova"].fillna(0), height=0.4, label="PED-ANOVA")
    ax.set_yticks(pos, df["parameter"])
    ax.invert_yaxis()
    ax.set_xlabel("importance (normalised)")
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sensitivity(sweep: Sweep, fig_dir: Path, prefix: str = "", pair: tuple[str, str] | None = None) -> Sensitivity:
    """Importances plus the three figures (those that make sense for this sweep)."""
    sens = importances(sweep)
    params = _params(sweep)
    for f in (importance_plot(sens, f"{sweep.name}: importance of each parameter for {sweep.metric}",
                              fig_dir / f"{prefix}importance.png"),
              marginal_plot(sweep, params, fig_dir / f"{prefix}marginal_effects.png")):
        if f:
            sens.figures.append(f)
    knobs = [p for p in params if p != SEED_PATH]
    if pair is None and len(knobs) >= 2:
        ranked = [p for p in sens.importances["parameter"] if p in knobs] if not sens.importances.empty else knobs
        pair = (ranked[0], ranked[1])
    if pair is not None and all(f"config/{p}" in sweep.results for p in pair):
        f = interaction_plot(sweep, pair, fig_dir / f"{prefix}interaction.png")
        if f:
            sens.figures.append(f)
            sens.pair = pair
    return sens
