"""Sentences for the analysis and conclusion sections, each computed from the numbers.

Nothing here states a finding that a number below does not carry: every sentence is a
template filled from the ablation, importance, savings, checks and results tables. What the
conclusion recommends is what moved the objective beyond the seed noise, factor by factor; a tie,
or differences within noise or untestable, recommend nothing, and a seed is never recommended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analysis.ablation import BEYOND_NOISE, WITHIN_NOISE, Ablation
from analysis.checks import TOP_LETTER_MAX, mcq_checks, training_shortfalls
from analysis.curves import Savings
from analysis.load import SEED_PATH, Sweep
from analysis.sensitivity import Sensitivity
from analysis.stats import is_tie


@dataclass
class Findings:
    """What the sentences are built from; also reused by the conclusion."""

    best: dict[str, Any] | None = None
    tie: float | None = None  # every finished trial reached this same value of the objective
    effects: list[dict[str, Any]] = field(default_factory=list)  # beyond noise, largest first
    noise_effects: list[dict[str, Any]] = field(default_factory=list)
    untestable: list[dict[str, Any]] = field(default_factory=list)
    shortfalls: pd.DataFrame = field(default_factory=pd.DataFrame)  # analysis.checks.training_shortfalls
    mcq: pd.DataFrame = field(default_factory=pd.DataFrame)  # analysis.checks.mcq_checks


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def findings(sweep: Sweep, abl: Ablation, best_id: str | None) -> Findings:
    f = Findings(shortfalls=training_shortfalls(sweep), mcq=mcq_checks(sweep))
    r = sweep.results
    if sweep.metric in r and is_tie(sweep.finished[sweep.metric].astype(float).tolist()):
        f.tie = float(sweep.finished[sweep.metric].astype(float).dropna().iloc[0])
    elif best_id is not None:
        row = r[r["trial_id"].astype(str) == best_id].iloc[0]
        seed = row.get(f"config/{SEED_PATH}", row.get("seed"))
        f.best = {"trial_id": best_id, "value": float(row[sweep.metric]), "setting": sweep.setting(row),
                  "status": row["status"], "seed": seed if pd.notna(seed) else None}
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
        elif e["verdict"] in BEYOND_NOISE:
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


def _better(sweep: Sweep) -> str:
    return "lower" if sweep.mode == "min" else "higher"


def _best_sentence(sweep: Sweep, f: Findings) -> str:
    if f.tie is not None:
        return (f"All {len(sweep.finished)} finished trials reached {sweep.metric} = {f.tie:.4g}: no difference "
                "between the tested settings, so none of them is best.")
    if not f.best:
        return f"No trial produced a value of {sweep.metric}, so there is no best setting."
    fin = sweep.finished[sweep.metric].dropna() if sweep.metric in sweep.results else pd.Series(dtype=float)
    med = f"; the median finished trial reached {fin.median():.4g}" if len(fin) > 1 else ""
    note = "" if f.best["status"] == "TERMINATED" else " (no trial finished; this one was stopped early)"
    seed = f" (seed {f.best['seed']})" if f.best["seed"] is not None else ""
    caveat = ""
    if not f.effects and f.noise_effects:
        caveat = "; no tested change moved it beyond noise, so this single run is no evidence for its setting"
    elif not f.effects and f.untestable:
        caveat = "; its difference to the others cannot be tested, so this single run is no evidence for its setting"
    return (f"Best single trial: trial {f.best['trial_id']}{note} reached {sweep.metric} = "
            f"{f.best['value']:.4g} ({_better(sweep)} is better) with {f.best['setting']}{seed}{med}{caveat}.")


def _importance_sentences(sweep: Sweep, abl: Ablation, sens: Sensitivity) -> list[str]:
    """Importances read against the seed's own importance and against the ablation's noise verdicts."""
    imp = sens.importances
    if imp.empty or not imp["fanova"].notna().any():
        return []
    top = imp.iloc[0]
    out = [f"fANOVA ranks {top['parameter']} most important ({top['fanova']:.0%} of the explained variance"
           + (f"; PED-ANOVA: {top['ped_anova']:.0%})" if math.isfinite(top["ped_anova"]) else ")")
           + (f", then {imp.iloc[1]['parameter']} ({imp.iloc[1]['fanova']:.0%})" if len(imp) > 1 else "")
           + f", over {sens.n_trials} trials."]
    seed = imp[imp["parameter"] == SEED_PATH]
    if len(seed):
        s = float(seed["fanova"].iloc[0])
        weak = imp[(imp["parameter"] != SEED_PATH) & (imp["fanova"] <= s)]
        if len(weak):
            out.append(f"{', '.join(weak['parameter'])} matter no more than the seed ({s:.0%}), i.e. they are "
                       "indistinguishable from noise.")
    else:
        out.append("No seed was varied, so these importances cannot be read against the seed's own.")
    noisy = []
    for p in imp["parameter"]:
        k, m = abl.beyond_noise(p, sweep.metric)
        if p != SEED_PATH and m and not k:
            noisy.append(f"{p} ({float(imp.loc[imp['parameter'] == p, 'fanova'].iloc[0]):.0%})")
    if noisy:
        out.append(f"The importance of {', '.join(noisy)} rests on differences within noise: none of "
                   f"{'its' if len(noisy) == 1 else 'their'} levels differs from the baseline beyond noise (each is "
                   "within noise or not testable), so it ranks variation that noise alone can produce, not an effect.")
    return out


def _shortfall_sentence(f: Findings) -> str | None:
    if f.shortfalls.empty:
        return None
    parts = []
    for setting, g in f.shortfalls.groupby("setting", sort=False):
        asked = g["asked"].dropna()
        of = f" of {int(asked.iloc[0])} asked" if len(asked) else ""
        got = sorted(set(g["n_examples"]))
        dropped = int(g["dropped"].max())
        why = f", up to {dropped} prompts longer than train.max_seq_len dropped" if dropped else ""
        parts.append(f"{setting}: {'-'.join(map(str, [got[0], got[-1]] if len(got) > 1 else got))} examples{of} "
                     f"in {len(g)} trial(s) ({', '.join(g['trial_id'])}){why}")
    return ("Confound: trained on fewer examples than asked: " + "; ".join(parts) + ". These arms differ from "
            "the others in the size of their training set as well, so their comparison mixes the two.")


def _mcq_sentences(f: Findings) -> list[str]:
    if f.mcq.empty:
        return []
    out = []
    for name, g in f.mcq.groupby("set", sort=False):
        collapsed = g[g["top_letter_share"].astype(float) >= TOP_LETTER_MAX] if "top_letter_share" in g else g.iloc[:0]
        chance = g[g["flag"].str.contains("not above chance")]
        if len(collapsed):
            out.append(f"MCQ set {name}: predictions collapse onto one letter in {len(collapsed)} of {len(g)} "
                       f"trial(s) (top-letter share up to {collapsed['top_letter_share'].astype(float).max():.0%}); "
                       "its accuracy reflects the answer-letter distribution, not knowledge.")
        if len(chance):
            out.append(f"MCQ set {name}: accuracy is not above chance ({float(chance['chance'].iloc[0]):.3g}) in "
                       f"{len(chance)} of {len(g)} trial(s) (one-sided binomial test on n_scored, p ≥ 0.05; "
                       f"accuracies {chance['acc'].min():.3g}-{chance['acc'].max():.3g}).")
    return out


def analysis_sentences(sweep: Sweep, abl: Ablation, sens: Sensitivity, sav: Savings, f: Findings) -> list[str]:
    out = [_count_sentence(sweep.results), _best_sentence(sweep, f), _noise_sentence(sweep.metric, abl)]
    out += _effect_sentences(sweep.metric, f)
    if abl.binned:
        out.append(f"Continuous factors ({', '.join(abl.binned)}) were split into quantile bins for the ablation; "
                   "the marginal-effect plots show the raw values.")
    out += _importance_sentences(sweep, abl, sens)
    out += list(sens.notes)
    out += [s for s in [_shortfall_sentence(f)] if s] + _mcq_sentences(f)
    out += [s for s in [_savings_sentence(sweep, sav), _failure_sentence(sweep.results)] if s]
    return out


def _count_sentence(r: pd.DataFrame) -> str:
    counts = r["status"].value_counts()
    n_fin = int(counts.get("TERMINATED", 0))
    return (f"{len(r)} trial(s) ran: {n_fin} finished, {int(counts.get('EARLY_STOPPED', 0))} stopped early, "
            f"{int(counts.get('ERROR', 0))} failed"
            + (f" and {int(counts.get('RUNNING', 0))} were still running." if counts.get("RUNNING") else "."))


def _noise_sentence(metric: str, abl: Ablation) -> str:
    noise = abl.noise.get(metric, math.nan)
    if math.isfinite(noise):
        return (f"Seed-to-seed noise of {metric} (pooled std of runs that differ only in the seed): "
                f"{noise:.3g}.")
    return (f"No configuration was repeated with another seed, so the seed noise of {metric} is "
            "unknown; differences between single runs cannot be tested.")


def _effect_sentences(metric: str, f: Findings) -> list[str]:
    """The effects beyond noise, those within it, and those that cannot be tested."""
    out = []
    if f.effects:
        out.append("Largest effects beyond noise: " + "; ".join(_effect(e, metric) for e in f.effects[:3]) + ".")
    elif f.noise_effects:
        out.append(f"No level of any factor changed {metric} by more than the noise.")
    if f.noise_effects:
        out.append("Within noise: " + "; ".join(
            f"{e['factor']} = {e['level']} vs {e['baseline']} ({e['diff']:+.3g}"
            + (f", {_p(e['p'])})" if math.isfinite(e["p"]) else ")") for e in f.noise_effects) + ".")
    if f.untestable:
        out.append("Not testable (a single run on a side, or identical runs on both, and no seed noise to compare "
                   "with; or no finished run at one level): " + "; ".join(
                       f"{e['factor']} = {e['level']} vs {e['baseline']} "
                       + (f"({e['diff']:+.3g})" if math.isfinite(e["diff"]) else "(no difference computable)")
                       for e in f.untestable) + ".")
    return out


def _savings_sentence(sweep: Sweep, sav: Savings) -> str | None:
    if sav.n_stopped:
        return (f"Early stopping cut {sav.n_stopped} trial(s) short: the sweep used {sav.actual_seconds:,.0f} s "
                f"of trial time instead of an estimated {sav.full_seconds:,.0f} s had every trial run all "
                f"{sav.max_reports} reports, saving {sav.saved_seconds:,.0f} s ({sav.saved_fraction:.0%}) and "
                f"{sav.full_tokens - sav.actual_tokens:,.0f} training tokens.")
    if len(sweep.results) and not sweep.eval_only:
        return "No trial was stopped early, so early stopping saved nothing."
    return None


def _failure_sentence(r: pd.DataFrame) -> str | None:
    failed = r[r["status"] == "ERROR"]
    if not len(failed):
        return None
    errs = failed["error"].fillna("").astype(str).value_counts() if "error" in failed else pd.Series(dtype=int)
    return f"{len(failed)} trial(s) failed: " + "; ".join(
        f"{n}× {msg or 'no message recorded'}" for msg, n in errs.items()) + "."

def _recommendations(sweep: Sweep, f: Findings) -> list[str]:
    """Per factor with a difference beyond noise: the level to use (or to keep). Factors never include the seed."""
    out = []
    for factor in dict.fromkeys(e["factor"] for e in f.effects):
        items = [e for e in f.effects if e["factor"] == factor]
        better = [e for e in items if e["verdict"] == "better"]
        worse = [e for e in items if e["verdict"] == "worse"]
        if better:
            e = max(better, key=lambda d: abs(d["diff"]))
            out.append(f"Use {factor} = {e['level']}: it moves {sweep.metric} by {e['diff']:+.3g} against "
                       f"{e['baseline']}, beyond noise.")
        elif worse:
            out.append(f"Keep {factor} = {items[0]['baseline']}: {', '.join(str(e['level']) for e in worse)} "
                       f"made {sweep.metric} worse beyond noise.")
        else:  # no declared direction: a difference, but no better side
            out.append(f"{factor} changes {sweep.metric} beyond noise, but {sweep.metric} declares no better "
                       "direction, so no level is recommended.")
    return out


def conclusion_sentences(sweep: Sweep, f: Findings, sav: Savings) -> list[str]:
    if f.tie is not None:
        out = [f"The tested settings made no difference: every finished trial reached {sweep.metric} = "
               f"{f.tie:.4g}, so no setting is recommended."]
    elif not f.best:
        return [f"No trial produced a value of {sweep.metric}, so the sweep answers nothing yet; see the failed "
                "and unfinished trials in the results."]
    elif f.effects:
        out = _recommendations(sweep, f)
        if not f.noise_effects and not f.untestable:
            out.append("The best single trial's full configuration is in best.yaml.")
    elif f.noise_effects:
        out = [f"No tested change moved {sweep.metric} beyond noise, so no setting is recommended over "
               "another; more seeds or larger changes are needed to separate them."]
    elif f.untestable:
        out = [f"The differences in {sweep.metric} rest on single runs and cannot be tested, so no setting is "
               "recommended yet; repeat the settings over several seeds (search.seeds with algorithm grid/random)."]
    else:
        out = [f"One configuration was run ({f.best['setting']}): {sweep.metric} = {f.best['value']:.4g} at best."]
    if not f.shortfalls.empty:
        out.append(f"Caveat: {f.shortfalls['setting'].nunique()} setting(s) trained on fewer examples than asked "
                   "(see the analysis), a confound in their comparison.")
    if not f.mcq.empty and (f.mcq["flag"] != "").any():
        sets = ", ".join(dict.fromkeys(f.mcq.loc[f.mcq["flag"] != "", "set"]))
        out.append(f"Caveat: the accuracy of MCQ set(s) {sets} is not evidence of knowledge (collapsed "
                   "predictions or not above chance; see the analysis).")
    if sav.n_stopped and math.isfinite(sav.saved_fraction):
        out.append(f"Early stopping saved about {sav.saved_fraction:.0%} of the trial compute.")
    return out
