"""Report sections a course recipe adds to report.md (harness/recipe.py calls add_sections after the
report): the base-model baselines beside the best LoRA trial on the objective, the learning curve of
the course's metric against optimizer steps, and where the deliverable is. Reads files only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from analysis.load import Sweep, load_sweep


def companions(metric: str) -> list[str]:
    """The objective and what belongs beside it: the token-weighted perplexity beside the per-example mean."""
    return [metric, "ppl_" + metric.removeprefix("ppl_mean_")] if metric.startswith("ppl_mean_") else [metric]


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else "–"


def _shots(sweep: Sweep, tid: str) -> object:
    """eval.icl_shots of a trial whose results row has no column for it (a single level)."""
    return ((sweep.trial_configs.get(tid) or {}).get("eval") or {}).get("icl_shots", (sweep.config.get("eval") or {})
                                                                       .get("icl_shots", "–"))


def baseline_table(sweep: Sweep, baselines: list[Sweep]) -> pd.DataFrame:
    """One row per base-model baseline (k-shot level) and one for the best trial, on the objective."""
    cols = companions(sweep.metric)
    rows = []
    for b in baselines:
        for _, r in b.results.iterrows():
            shots = r.get("config/eval.icl_shots", _shots(b, str(r["trial_id"])))
            rows.append({"model": f"base model, {shots}-shot", "trial": r["trial_id"],
                         **{c: _fmt(r.get(c)) for c in cols}})
    done = sweep.results[pd.to_numeric(sweep.results.get(sweep.metric), errors="coerce").notna()]
    if len(done):
        best = done.loc[done[sweep.metric].astype(float).idxmin() if sweep.mode == "min"
                        else done[sweep.metric].astype(float).idxmax()]
        rows.append({"model": "LoRA, best trial", "trial": best["trial_id"], **{c: _fmt(best.get(c)) for c in cols}})
    return pd.DataFrame(rows)


def curve_figure(sweep: Sweep, metric: str, path: Path) -> Path | None:
    """metric against optimizer steps, one line per trial, the best one thick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.curves import best_trial

    hists = {t: h for t, h in sweep.histories.items() if metric in h and "step" in h and h[metric].notna().any()}
    if not hists:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    best = best_trial(sweep)
    for tid, h in hists.items():
        h = h[h[metric].notna()]
        ax.plot(h["step"], h[metric], marker="o", ms=3, lw=2.5 if tid == best else 1.0,
                color="C2" if tid == best else "C0", alpha=1 if tid == best else 0.6,
                label=f"best ({tid})" if tid == best else None)
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{sweep.name}: {metric} during training ({len(hists)} trials)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _predictions(trial_dir: Path, set_name: str) -> dict[str, dict]:
    path = trial_dir / f"{set_name}.json"
    if not path.exists():
        return {}
    return {str(p["id"]): p for p in json.loads(path.read_text(encoding="utf-8")).get("predictions", [])}


def case_studies(sweep: Sweep, baselines: list[Sweep], set_name: str, n: int = 6) -> pd.DataFrame:
    """Questions of MCQ set `set_name` (file `<set_name>.json` in each trial dir, e.g. mcq_law) with each
    baseline's, the best trial's and the reference answer; questions where they disagree come first."""
    from analysis.curves import best_trial

    best = best_trial(sweep)
    if best is None:
        return pd.DataFrame()
    cols: dict[str, dict[str, dict]] = {}
    for b in baselines:
        for _, r in b.results.iterrows():
            cols[f"base {r.get('config/eval.icl_shots', _shots(b, str(r['trial_id'])))}-shot"] = _predictions(b.path / "trials" / str(r["trial_id"]),
                                                                                set_name)
    cols["LoRA best"] = _predictions(sweep.path / "trials" / best, set_name)
    ref = cols["LoRA best"]
    rows = []
    for qid, p in ref.items():
        answers = {k: (v.get(qid) or {}).get("pred", "–") for k, v in cols.items()}
        q = " ".join(str(p.get("question", "")).split())
        rows.append({"id": qid, "question": q[:220] + ("…" if len(q) > 220 else ""), **answers,
                     "reference": p["answer"], "_differ": len(set(answers.values())) > 1})
    rows.sort(key=lambda r: not r["_differ"])  # stable: file order within each group
    return pd.DataFrame([{k: v for k, v in r.items() if k != "_differ"} for r in rows[:n]])


def _words(text: object) -> int:
    return len(str(text or "").split())


def answer_rows(sweep: Sweep) -> pd.DataFrame:
    """One row per judged answer of every finished trial: trial, id, judge outcome, answer and reference words."""
    import numpy as np

    rows = []
    for tid in sweep.results["trial_id"].astype(str):
        d = sweep.path / "trials" / tid
        if not (d / "judge.jsonl").exists() or not (d / "generations.jsonl").exists():
            continue
        gens = {str(g["id"]): g for g in map(json.loads, (d / "generations.jsonl").read_text().splitlines())}
        for j in map(json.loads, (d / "judge.jsonl").read_text(encoding="utf-8").splitlines()):
            score = j.get("model_score", j.get("score"))
            g = gens.get(str(j.get("id")))
            if j.get("skipped") or not isinstance(score, (int, float)) or g is None or j.get("turn", 1) != 1:
                continue
            ref = g.get("reference")
            rows.append({"trial": tid, "id": str(j["id"]), "score": float(score), "words": _words(g.get("output")),
                         "ref_words": _words(ref) if ref else np.nan})
    return pd.DataFrame(rows)


def length_controlled(answers: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """(per-trial table, slope in score points per 100 words). The judge outcome of each answer is regressed
    on its length difference (to the reference where there is one, else to the question's mean answer length
    over the trials) with one intercept per trial and one shared slope; a trial's intercept is its outcome at
    equal length, the idea behind AlpacaEval's length-controlled win rate."""
    import numpy as np

    a = answers.copy()
    base = a["ref_words"].where(a["ref_words"].notna(), a.groupby("id")["words"].transform("mean"))
    a["diff"] = (a["words"] - base) / 100.0
    trials = list(dict.fromkeys(a["trial"]))
    x = np.column_stack([(a["trial"] == t).to_numpy(float) for t in trials] + [a["diff"].to_numpy(float)])
    slope, coef = float("nan"), None
    if len(a) > len(trials) and a["diff"].std() > 0:
        coef = np.linalg.lstsq(x, a["score"].to_numpy(float), rcond=None)[0]
        slope = float(coef[-1])
    g = a.groupby("trial", sort=False)
    table = pd.DataFrame({"trial": trials, "judge score": [g.get_group(t)["score"].mean() for t in trials],
                          "mean answer words": [g.get_group(t)["words"].mean() for t in trials],
                          "length-controlled score": list(coef[:-1]) if coef is not None else [float("nan")] * len(trials),
                          "answers": [len(g.get_group(t)) for t in trials]})
    return table, slope


def length_section(sweep: Sweep) -> list[str]:
    """Markdown lines: each trial's judge score, mean answer length and length-controlled score."""
    answers = answer_rows(sweep)
    if answers.empty:
        return ["No judged answers were found (trials/<id>/judge.jsonl)."]
    table, slope = length_controlled(answers)
    table = table.assign(**{c: table[c].map(_fmt) for c in ("judge score", "mean answer words",
                                                            "length-controlled score")})
    says = ("too few answers, or all of one length, to separate length from quality" if not math.isfinite(slope)
            else f"the judge gives {slope:+.2f} points per 100 more words than the reference / the question's "
                 "mean answer; the length-controlled score is a trial's outcome at equal length, so a strategy "
                 "that wins only by writing longer answers loses its lead there")
    return [f"Per judged answer: outcome ~ trial + length difference ({len(answers)} answers); {says}.", "",
            table.to_markdown(index=False)]


def add_sections(out_dir: Path, run_dir: Path, baseline_dirs: list[Path], *, curve: str | None = None,
                 delivered: Path | None = None, case_set: str | None = None,
                 length_control: bool = False) -> list[str]:
    """Append the recipe's sections to out_dir/report.md; returns their titles."""
    sweep = load_sweep(run_dir)
    baselines = [load_sweep(d) for d in baseline_dirs]
    lines, titles = [], []
    if baselines:
        titles.append("Baselines and the best trial")
        table = baseline_table(sweep, baselines)
        lines += ["", f"## {titles[-1]}", "",
                  f"The base model without training (k-shot: k solved examples in front of each row, drawn at random "
                  f"from the training pool; an MCQ set's from its dev split) and the best LoRA trial, on "
                  f"{sweep.metric} ({sweep.mode}).", "",
                  table.to_markdown(index=False)]
    if curve:
        titles.append("Learning curve")
        fig = curve_figure(sweep, curve, out_dir / "figures" / f"recipe_curve_{curve}.png")
        lines += ["", f"## {titles[-1]}", ""]
        lines += [f"![{curve} against optimizer steps](figures/{fig.name})"] if fig else [
            f"No trial reported {curve} during training (eval.perplexity_every_report off?)."]
    if case_set:
        titles.append("Case studies")
        cases = case_studies(sweep, baselines, case_set)
        lines += ["", f"## {titles[-1]}", "",
                  f"Questions of {case_set} where the models disagree first; each column is the letter that model "
                  "chose, `reference` the answer key.", "",
                  cases.to_markdown(index=False) if len(cases) else f"No predictions of {case_set} were found."]
    if length_control:
        titles.append("Answer length and the judge")
        lines += ["", f"## {titles[-1]}", "", *length_section(sweep)]
    if delivered is not None:
        titles.append("Deliverable")
        n = len(json.loads(delivered.read_text(encoding="utf-8")))
        lines += ["", f"## {titles[-1]}", "", f"`{delivered}`: the best trial's {n} answers "
                  f"(a JSON list in the prompt file's order)."]
    report = out_dir / "report.md"
    with report.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return titles
