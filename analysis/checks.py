"""Checks of what the numbers rest on, reported beside them (never silently):

- training shortfalls: a trial that trained on fewer examples than its selection asked for (prompts
  longer than train.max_seq_len are dropped by the trial: results.csv `dropped_prompt_too_long`; or the
  selection found fewer), which confounds its arm's comparison with the others;
- MCQ sets whose predictions collapse onto one letter (`mcq_<set>_top_letter_share` >= TOP_LETTER_MAX) or
  whose accuracy is not above chance (`mcq_<set>_acc` of `mcq_<set>_n_scored` questions against
  `mcq_<set>_chance`, one-sided binomial test): such an accuracy says nothing about what the model knows.
"""

from __future__ import annotations

import math
import re

import pandas as pd
from scipy import stats

from analysis.load import Sweep, finite
from analysis.stats import ALPHA

TOP_LETTER_MAX = 0.9  # share of the most frequent predicted letter from which predictions count as collapsed
_MCQ_SET = re.compile(r"^mcq_(.+)_n_scored$")


def _asked(sweep: Sweep, row: pd.Series) -> float | None:
    """selection.n the trial asked for (searched or configured); None under a token budget."""
    budget = row.get("config/selection.token_budget", sweep.base_value("selection.token_budget"))
    if finite(budget):
        return None
    n = row.get("config/selection.n", sweep.base_value("selection.n"))
    return float(n) if finite(n) else None


def training_shortfalls(sweep: Sweep) -> pd.DataFrame:
    """One row per trial that trained on fewer examples than asked: trial_id, setting, asked, n_examples,
    dropped (prompts too long for train.max_seq_len)."""
    res = sweep.results
    rows = []
    if "n_examples" not in res or sweep.eval_only:
        return pd.DataFrame(rows)
    for _, r in res[res["status"] != "ERROR"].iterrows():
        got, asked = r.get("n_examples"), _asked(sweep, r)
        dropped = r.get("dropped_prompt_too_long")
        dropped = int(dropped) if finite(dropped) else 0
        if not finite(got) or not (dropped > 0 or (asked is not None and got < asked)):
            continue
        rows.append({"trial_id": str(r["trial_id"]), "setting": sweep.setting(r), "asked": asked,
                     "n_examples": int(got), "dropped": dropped})
    return pd.DataFrame(rows)


def mcq_sets(sweep: Sweep) -> list[str]:
    """MCQ sets with a per-set accuracy and scored count in results.csv."""
    found = [m.group(1) for c in sweep.results.columns if (m := _MCQ_SET.match(c))]
    return [s for s in found if f"mcq_{s}_acc" in sweep.results]


def mcq_checks(sweep: Sweep) -> pd.DataFrame:
    """Per trial and MCQ set: accuracy, questions scored, chance, the binomial p of accuracy > chance,
    the top-letter share, and the flag (empty when the set looks sound)."""
    res = sweep.results
    rows = []
    for name in mcq_sets(sweep):
        for _, r in res[res[f"mcq_{name}_acc"].map(finite)].iterrows():
            acc, n = float(r[f"mcq_{name}_acc"]), r[f"mcq_{name}_n_scored"]
            chance, share = r.get(f"mcq_{name}_chance", math.nan), r.get(f"mcq_{name}_top_letter_share", math.nan)
            p = math.nan
            if finite(chance) and finite(n) and int(n) > 0:
                p = float(stats.binomtest(round(acc * int(n)), int(n), float(chance), alternative="greater").pvalue)
            flags = []
            if finite(share) and float(share) >= TOP_LETTER_MAX:
                flags.append(f"predictions collapse onto one letter ({float(share):.0%} of them)")
            if finite(p) and p >= ALPHA:
                flags.append(f"accuracy not above chance ({acc:.3g} vs {float(chance):.3g}, binomial p = {p:.2g}, "
                             f"n = {int(n)})")
            rows.append({"trial_id": str(r["trial_id"]), "set": name, "acc": acc,
                         "n_scored": int(n) if finite(n) else math.nan, "chance": chance, "p_above_chance": p,
                         "top_letter_share": share, "flag": "; ".join(flags)})
    return pd.DataFrame(rows)
