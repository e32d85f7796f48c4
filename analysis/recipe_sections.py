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
    shown, tied = lora_shown(sweep)
    if shown is not None:
        best = sweep.results.set_index(sweep.results["trial_id"].astype(str)).loc[shown]
        label = f"LoRA, {tied} trials tied (first shown)" if tied else "LoRA, best trial"
        rows.append({"model": label, "trial": shown, **{c: _fmt(best.get(c)) for c in cols}})
    return pd.DataFrame(rows)


def lora_shown(sweep: Sweep) -> tuple[str | None, int]:
    """The LoRA trial the recipe's sections show, and how many trials tied with it (0: it is the best,
    analysis.curves.best_trial). When every finished trial reached the same objective (a small model
    answering "A" to every question) it is the first of them, labelled as a tie so that no reader takes
    it for a winner."""
    from analysis.curves import best_trial

    best = best_trial(sweep)
    r = sweep.results
    if best is not None or sweep.metric not in r:
        return best, 0
    tied = r[(r["status"] == "TERMINATED") & pd.to_numeric(r[sweep.metric], errors="coerce").notna()]
    return (str(tied.iloc[0]["trial_id"]), len(tied)) if len(tied) else (None, 0)


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
    best, tied = lora_shown(sweep)
    if best is None:
        return pd.DataFrame()
    cols: dict[str, dict[str, dict]] = {}
    for b in baselines:
        for _, r in b.results.iterrows():
            cols[f"base {r.get('config/eval.icl_shots', _shots(b, str(r['trial_id'])))}-shot"] = _predictions(b.path / "trials" / str(r["trial_id"]),
                                                                                set_name)
    lora = "LoRA (tied)" if tied else "LoRA best"
    cols[lora] = _predictions(sweep.path / "trials" / best, set_name)
    ref = cols[lora]
    rows = []
    for qid, p in ref.items():
        answers = {k: (v.get(qid) or {}).get("pred", "–") for k, v in cols.items()}
        q = " ".join(str(p.get("question", "")).split())
        rows.append({"id": qid, "question": q[:220] + ("…" if len(q) > 220 else ""), **answers,
                     "reference": p["answer"], "_differ": len(set(answers.values())) > 1})
    rows.sort(key=lambda r: not r["_differ"])  # stable: file order within each group
    return pd.DataFrame([{k: v for k, v in r.items() if k != "_differ"} for r in rows[:n]])


def pool_picks(sweep: Sweep) -> dict[str, list[str]]:
    """Strategy -> the ids its trials selected (trials/<id>/selected_ids.json), in finishing order. Trials of
    one strategy with the same picks (another lr, r or curriculum) share one entry; different picks of one
    strategy (another seed or n) get one each, named after their first trial."""
    picks: dict[str, list[str]] = {}
    default = (sweep.config.get("selection") or {}).get("strategy", "?")
    for tid in sweep.results["trial_id"].astype(str):
        path = sweep.path / "trials" / tid / "selected_ids.json"
        if not path.exists():
            continue
        ids = [str(i) for i in json.loads(path.read_text(encoding="utf-8"))]
        name = str(((sweep.trial_configs.get(tid) or {}).get("selection") or {}).get("strategy", default))
        if not any(v == ids and (k == name or k.startswith(f"{name} (")) for k, v in picks.items()):
            picks[name if name not in picks else f"{name} ({tid})"] = ids
    return picks


def pool_figure(sweep: Sweep, path: Path) -> tuple[Path | None, dict[str, list[str]]]:
    """The pool's conversation length against its score (selection/pool_scores.csv, written by the driver),
    one panel per strategy with its picks highlighted; (figure or None, the picks drawn per panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    table = sweep.path / "selection" / "pool_scores.csv"
    picks = pool_picks(sweep)
    if not table.exists() or not picks:
        return None, {}
    pool = pd.read_csv(table, dtype={"id": str}).dropna(subset=["score"]).set_index("id")
    # Pool scores are coarse (half points): a seeded vertical jitter keeps the stacked points visible.
    y = pool["score"].to_numpy(float) + np.random.default_rng(0).uniform(-0.15, 0.15, len(pool))
    x = pool["conversation_words"].clip(lower=1).to_numpy(float)
    cols = min(3, len(picks))
    rows = -(-len(picks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(6.0, 4.2 * cols), 3.4 * rows), sharex=True, sharey=True, squeeze=False)
    drawn = {}
    for ax, (name, ids) in zip(axes.flat, picks.items(), strict=False):
        on = pool.index.isin(ids)
        drawn[name] = [i for i in ids if i in pool.index]
        ax.scatter(x[~on], y[~on], s=4, color="0.75", alpha=0.5, lw=0, label=f"pool ({len(pool)})")
        ax.scatter(x[on], y[on], s=9, color="C3", alpha=0.9, lw=0, label=f"picked ({on.sum()})")
        ax.set_xscale("log")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(picks):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("conversation words (log)")
    for ax in axes[:, 0]:
        ax.set_ylabel("score (jittered ±0.15)")
    fig.suptitle(f"{sweep.name}: the pool's length and score, each strategy's picks", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, drawn


def pool_section(sweep: Sweep, out_dir: Path) -> list[str]:
    """Markdown lines: the pool scatter and, per strategy, how many picks and their mean length and score."""
    fig, drawn = pool_figure(sweep, out_dir / "figures" / "recipe_pool_length_score.png")
    if fig is None:
        return ["No pool scores (selection/pool_scores.csv) or no trial's selected_ids.json were found."]
    pool = pd.read_csv(sweep.path / "selection" / "pool_scores.csv", dtype={"id": str}).set_index("id")
    rows = [{"strategy": k, "picked": len(ids), "mean conversation words": _fmt(pool.loc[ids, "conversation_words"]
                                                                                  .mean()),
             "mean score": _fmt(pool.loc[ids, "score"].mean())} for k, ids in drawn.items()]
    rows.append({"strategy": "whole pool", "picked": len(pool),
                 "mean conversation words": _fmt(pool["conversation_words"].mean()),
                 "mean score": _fmt(pool["score"].mean())})
    return [f"![pool length against score, picks per strategy](figures/{fig.name})", "",
            pd.DataFrame(rows).to_markdown(index=False)]


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
    if (run_dir / "selection" / "pool_scores.csv").exists():
        titles.append("The pool: length against score")
        lines += ["", f"## {titles[-1]}", "", "Every pool example's conversation length against its score (what "
                  "the score strategy ranks by), with the examples each selection strategy picked.", "",
                  *pool_section(sweep, out_dir)]
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
