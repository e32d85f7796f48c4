"""Sentences for the analysis and conclusion sections, each computed from the numbers.

Nothing here states a finding that a number below does not carry: every sentence is a
template filled from the ablation, importance, savings and results tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analysis.ablation import WITHIN_NOISE, Ablation
from analysis.curves import Savings
from analysis.load import SEED_PATH, Sweep
from analysis.sensitivity import Sensitivity


@dataclass
class Findings:
    """What the sentences are built from; also reused by the conclusion."""

    best: dict[str, Any] | None = None
    effects: list[dict[str, Any]] = field(default_factory=list)  # significant, largest first
    noise_effects: list[dict[str, Any]] = field(default_factory=list)
    untestable: list[dict[str, Any]] = field(default_factory=list)


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _setting(row: pd.Series, sweep: Sweep) -> str:
    parts = [f"{c.removeprefix('config/')} = {_v(row[c])}" for c in sweep.param_columns]
    return ", ".join(parts) if parts else "the base configuration"


def _v(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def findings(sweep: Sweep, abl: Ablation, best_id: str | None) -> Findings:
    f = Findings()
    r = sweep.results
    if best_id is not None:
        row = r[r["trial_id"].astype(str) == best_id].iloc[0]
        f.best = {"trial_id": best_id, "value": float(row[sweep.metric]), "setting": _setting(row, sweep),
                  "status": row["status"]}
    if abl.long.empty:
        return f
    obj = abl.long[(abl.long["metric"] == sweep.metric) & ~abl.long["baseline"]]
    base = abl.baselines
    for _, e in obj.iterrows():
        item = {"factor": e["factor"], "level": e["level"], "baseline": base[e["factor"]], "diff": e["diff"],
                "lo": e["diff_ci_low"], "hi": e["diff_ci_high"], "p": e["p"], "test": e["test"],
                "verdict": e["verdict"], "n": e["n"]}
        if e["verdict"] == WITHIN_NOISE:
            f.noise_effects.append(item)
        elif e["verdict"] in ("better", "worse", "higher", "lower"):
            f.effects.append(item)
        else:
            f.untestable.append(item)
    f.effects.sort(key=lambda d: -abs(d["diff"]))
    f.noise_effects.sort(key=lambda d: -abs(d["diff"]) if math.isfinite(d["diff"]) else 0)
    return f


def _effect(e: dict[str, Any], metric: str) -> str:
    ci = f", 95% CI [{e['lo']:+.3g}, {e['hi']:+.3g}]" if math.isfinite(e["lo"]) else ""
    p = f", {_p(e['p'])}, {e['test']}" if math.isfinite(e["p"]) else ""
    return (f"{e['factor']} = {e['level']} instead of {e['baseline']} changes {metric} by {e['diff']:+.3g}"
            f"{ci}{p} ({e['verdict']})")


def analysis_sentences(sweep: Sweep, abl: Ablation, sens: Sensitivity, sav: Savings, f: Findings) -> list[str]:
    out = []
    r = sweep.results
    counts = r["status"].value_counts()
    n_fin = int(counts.get("TERMINATED", 0))
    out.append(f"{len(r)} trial(s) ran: {n_fin} finished, {int(counts.get('EARLY_STOPPED', 0))} stopped early, "
               f"{int(counts.get('ERROR', 0))} failed"
               + (f" and {int(counts.get('RUNNING', 0))} were still running." if counts.get("RUNNING") else "."))
    if f.best:
        fin = sweep.finished[sweep.metric].dropna() if sweep.metric in r else pd.Series(dtype=float)
        med = f"; the median finished trial reached {fin.median():.4g}" if len(fin) > 1 else ""
        note = "" if f.best["status"] == "TERMINATED" else " (no trial finished; this one was stopped early)"
        out.append(f"Best setting: trial {f.best['trial_id']}{note} reached {sweep.metric} = {f.best['value']:.4g} "
                   f"({'lower' if sweep.mode == 'min' else 'higher'} is better) with {f.best['setting']}{med}.")
    else:
        out.append(f"No trial produced a value of {sweep.metric}, so there is no best setting.")
    noise = abl.noise.get(sweep.metric, math.nan)
    if math.isfinite(noise):
        out.append(f"Seed-to-seed noise of {sweep.metric} (pooled std of runs that differ only in the seed): "
                   f"{noise:.3g}.")
    else:
        out.append(f"No configuration was repeated with another seed, so the seed noise of {sweep.metric} is "
                   "unknown; differences between single runs cannot be tested.")
    if f.effects:
        out.append("Largest effects beyond noise: " + "; ".join(_effect(e, sweep.metric) for e in f.effects[:3]) + ".")
    elif f.noise_effects:
        out.append(f"No level of any factor changed {sweep.metric} by more than the noise.")
    if f.noise_effects:
        out.append("Within noise (p ≥ 0.05): " + "; ".join(
            f"{e['factor']} = {e['level']} vs {e['baseline']} ({e['diff']:+.3g}, {_p(e['p'])})"
            for e in f.noise_effects) + ".")
    if f.untestable:
        out.append("Not testable (a single run on one side and no seed noise to compare with, or no finished "
                   "run at one level): " + "; ".join(
                       f"{e['factor']} = {e['level']} vs {e['baseline']} "
                       + (f"({e['diff']:+.3g})" if math.isfinite(e["diff"]) else "(no difference computable)")
                       for e in f.untestable) + ".")
    if abl.binned:
        out.append(f"Continuous factors ({', '.join(abl.binned)}) were split into quantile bins for the ablation; "
                   "the marginal-effect plots show the raw values.")
    imp = sens.importances
    if not imp.empty and imp["fanova"].notna().any():
        top = imp.iloc[0]
        out.append(f"fANOVA ranks {top['parameter']} most important ({top['fanova']:.0%} of the explained variance"
                   + (f"; PED-ANOVA: {top['ped_anova']:.0%})" if math.isfinite(top["ped_anova"]) else ")")
                   + (f", then {imp.iloc[1]['parameter']} ({imp.iloc[1]['fanova']:.0%})" if len(imp) > 1 else "")
                   + f", over {sens.n_trials} trials.")
        seed = imp[imp["parameter"] == SEED_PATH]
        if len(seed):
            weak = imp[(imp["parameter"] != SEED_PATH) & (imp["fanova"] <= float(seed["fanova"].iloc[0]))]
            if len(weak):
                out.append(f"{', '.join(weak['parameter'])} matter no more than the seed "
                           f"({float(seed['fanova'].iloc[0]):.0%}), i.e. they are indistinguishable from noise.")
    for note in sens.notes:
        out.append(note)
    if sav.n_stopped:
        out.append(f"Early stopping cut {sav.n_stopped} trial(s) short: the sweep used {sav.actual_seconds:,.0f} s "
                   f"of trial time instead of an estimated {sav.full_seconds:,.0f} s had every trial run all "
                   f"{sav.max_reports} reports, saving {sav.saved_seconds:,.0f} s ({sav.saved_fraction:.0%}) and "
                   f"{sav.full_tokens - sav.actual_tokens:,.0f} training tokens.")
    elif len(r):
        out.append("No trial was stopped early, so early stopping saved nothing.")
    failed = r[r["status"] == "ERROR"]
    if len(failed):
        errs = failed["error"].fillna("").astype(str).value_counts() if "error" in failed else pd.Series(dtype=int)
        out.append(f"{len(failed)} trial(s) failed: " + "; ".join(
            f"{n}× {msg or 'no message recorded'}" for msg, n in errs.items()) + ".")
    return out


def conclusion_sentences(sweep: Sweep, f: Findings, sav: Savings) -> list[str]:
    if not f.best:
        return [f"No trial produced a value of {sweep.metric}, so the sweep answers nothing yet; see the failed "
                "and unfinished trials in the results."]
    out = []
    if f.best:
        out.append(f"Use {f.best['setting']} ({sweep.metric} = {f.best['value']:.4g}); its full configuration is "
                   "in best.yaml.")
    if f.effects:
        e = f.effects[0]
        out.append(f"The clearest lever is {e['factor']}: {e['level']} vs {e['baseline']} moves {sweep.metric} by "
                   f"{e['diff']:+.3g} ({e['verdict']}).")
    if f.noise_effects and not f.effects:
        out.append(f"None of the tested changes moved {sweep.metric} beyond noise; more seeds or larger "
                   "changes are needed to separate them.")
    if f.untestable and not (f.effects or f.noise_effects):
        out.append("The differences rest on single runs; repeat the best settings over several seeds "
                   "(search.seeds with algorithm grid/random) before trusting them.")
    if sav.n_stopped and math.isfinite(sav.saved_fraction):
        out.append(f"Early stopping saved about {sav.saved_fraction:.0%} of the trial compute.")
    return out or ["The sweep produced too few results for a conclusion."]
