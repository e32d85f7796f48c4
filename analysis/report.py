"""The report: `python -m analysis.report runs/<sweep> [runs/<other> ...] [--out DIR] [--baseline k=v ...]`.

write_report() loads each sweep directory, runs the ablation, sensitivity and curve analyses,
and writes <out>/report.md with tables/*.csv|.tex|.md and figures/*.png next to it. The driver
calls it at the end of a sweep; it never raises for a thin sweep (2 trials, all failed...),
it says what is missing instead.
"""

from __future__ import annotations

import argparse
import math
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from analysis import curves, render
from analysis.ablation import WITHIN_NOISE, Ablation, ablation
from analysis.checks import TOP_LETTER_MAX
from analysis.curves import Savings
from analysis.load import SEED_PATH, Sweep, finite, load_sweep
from analysis.narrative import Findings, analysis_sentences, conclusion_sentences, findings
from analysis.sensitivity import Sensitivity, sensitivity
from analysis.stats import compare, is_tie

PACKAGES = ["torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "ray", "optuna", "pandas",
            "scipy", "numpy", "matplotlib", "wandb", "pydantic"]
MD_MAX_ROWS = 60  # longer tables are cut in report.md; the CSV / TeX keep every row


@dataclass
class Analysed:
    sweep: Sweep
    prefix: str
    ablation: Ablation
    sensitivity: Sensitivity
    savings: Savings
    findings: Findings
    pareto: pd.DataFrame
    figures: list[Path] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def analyse(sweep: Sweep, fig_dir: Path, prefix: str, baseline: dict[str, Any] | None,
            test: str = "welch", pair: tuple[str, str] | None = None) -> Analysed:
    abl = ablation(sweep, baseline, method=test)
    sens = sensitivity(sweep, fig_dir, prefix, pair=pair)
    figs = list(sens.figures)
    lc = curves.learning_curves(sweep, fig_dir / f"{prefix}learning_curves.png")
    pf, front = curves.pareto(sweep, fig_dir / f"{prefix}pareto.png")
    figs = [f for f in (lc, pf) if f] + figs
    best = curves.best_trial(sweep)
    return Analysed(sweep, prefix, abl, sens, curves.savings(sweep), findings(sweep, abl, best), front, figs)


# ---------------------------------------------------------------------------------------------
# Sections


class Doc:
    """report.md being built, plus every table written alongside it."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.lines: list[str] = []

    def add(self, *lines: str) -> None:
        self.lines += list(lines)

    def table(self, a: Analysed | None, df: pd.DataFrame, name: str, caption: str, inline: bool = True) -> None:
        name = (a.prefix if a else "") + name
        if a is not None:
            a.tables[name] = df
        md = render.write_table(df, self.out_dir / "tables", name, caption)
        if not inline:
            self.add(f"*{caption}*: tables/{name}.csv, .tex, .md", "")
            return
        if len(df) > MD_MAX_ROWS:
            md = render.to_markdown(df.head(MD_MAX_ROWS)) + f"\n({len(df) - MD_MAX_ROWS} more rows in tables/{name}.csv)\n"
        self.add(f"*{caption}* (tables/{name}.csv, .tex, .md)", "", md.rstrip(), "")

    def figure(self, path: Path, caption: str) -> None:
        self.add(f"![{caption}]({path.relative_to(self.out_dir).as_posix()})", "")


def _get(cfg: dict, path: str, default: Any = "–") -> Any:
    d: Any = cfg
    for p in path.split("."):
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def space_table(sweep: Sweep) -> pd.DataFrame:
    rows = []
    for path, p in sweep.space.items():
        if p.kind in ("choice", "grid"):
            rng = ", ".join(map(str, p.values))
        elif p.kind == "tie":
            rng = f"= {p.times:g} × {p.tie}" + (f" + {p.plus:g}" if p.plus else "")
        else:
            rng = f"[{p.low:g}, {p.high:g}]"
        rows.append({"parameter": path, "kind": p.kind, "values / range": rng})
    seeds = _get(sweep.config, "search.seeds", [])
    if isinstance(seeds, list) and len(seeds) > 1 and SEED_PATH not in sweep.space:
        rows.append({"parameter": SEED_PATH, "kind": "seeds", "values / range": ", ".join(map(str, seeds))})
    if not rows:  # no sweep.yaml: describe what results.csv shows
        for col in sweep.param_columns:
            vals = sweep.results[col].dropna().unique()
            rows.append({"parameter": col.removeprefix("config/"), "kind": "observed",
                         "values / range": ", ".join(map(str, sorted(vals, key=str)[:8]))})
    return pd.DataFrame(rows)


def design(doc: Doc, a: Analysed) -> None:
    s, c = a.sweep, a.sweep.config
    searched = set(s.space) | {col.removeprefix("config/") for col in s.param_columns}

    def val(path: str) -> str:
        if s.is_tied(path):  # follows another parameter: not a factor of its own
            return tied_wording(s.space[path])
        return "searched" if path in searched else render.fmt(_get(c, path))

    sel_n = f"token budget {val('selection.token_budget')}" if _get(c, "selection.token_budget", None) else \
        f"n = {val('selection.n')}"
    counts = s.results["status"].value_counts()
    if s.eval_only:
        doc.add(*evaluation_design(s, val), "- **Trials:** " + ", ".join(
            f"{n} {st.lower().replace('_', '-')}" for st, n in counts.items()), "")
        doc.table(a, space_table(s), "search_space", f"{s.name}: search space")
        return
    reports = int(_get(c, "train.epochs", 0) or 0) * int(_get(c, "train.evals_per_epoch", 0) or 0)
    doc.add(
        f"- **Model:** {val('model.name')} (quantization: {val('model.quantization')})",
        f"- **Data:** {val('data.train')} (format {val('data.format')}); held-out eval: "
        + (f"{val('data.eval')}" if _get(c, "data.eval", None) else f"{val('data.eval_size')} rows of the pool")
        + f", split seed {val('data.split_seed')}" + bad_rows_note(s),
        f"- **Selection:** {val('selection.strategy')}, {sel_n}, offset {val('selection.offset')}; "
        f"curriculum: {val('curriculum.order')}",
        f"- **Training:** {val('train.epochs')} epoch(s), lr {val('train.lr')}, batch {val('train.batch_size')} × "
        f"grad-accum {val('train.grad_accum')}, max_seq_len {val('train.max_seq_len')}, scheduler "
        f"{val('train.scheduler')}, warmup {val('train.warmup_ratio')}, {val('train.evals_per_epoch')} evals/epoch",
        f"- **LoRA:** r {val('lora.r')}, alpha {val('lora.alpha')}, dropout {val('lora.dropout')}, "
        f"targets {val('lora.target_modules')}",
        f"- **Objective:** {s.metric} ({s.mode}); other metrics: {', '.join(m for m in s.metrics if m != s.metric) or '–'}",
        f"- **Search:** {render.fmt(_get(c, 'search.algorithm'))}, num_samples {render.fmt(_get(c, 'search.num_samples'))}, "
        f"seeds {render.fmt(_get(c, 'search.seeds'))}, max_concurrent {render.fmt(_get(c, 'search.max_concurrent'))}",
        f"- **Scheduler:** {render.fmt(_get(c, 'scheduler.type'))} (grace period {render.fmt(_get(c, 'scheduler.grace_period'))} "
        f"reports, reduction factor {render.fmt(_get(c, 'scheduler.reduction_factor'))})",
        f"- **Budget:** {len(s.results)} trials × up to {reports or a.savings.max_reports} reports; "
        f"{render.fmt(_get(c, 'resources.cpus_per_trial'))} CPU / {render.fmt(_get(c, 'resources.gpus_per_trial'))} "
        f"GPU per trial; {a.savings.actual_seconds:,.0f} s of trial time used",
        "- **Trials:** " + ", ".join(f"{n} {st.lower().replace('_', '-')}" for st, n in counts.items()),
        "",
    )
    doc.table(a, space_table(s), "search_space", f"{s.name}: search space")
    const = dict(s.constants)
    tied = {p: f"tied: = {q.times:g} × {q.tie}" for p, q in s.space.items() if q.kind == "tie"}
    if const or tied:
        rows = [{"parameter": k, "value": render.fmt(v)} for k, v in const.items() if k not in tied]
        rows += [{"parameter": k, "value": v} for k, v in tied.items()]
        doc.table(a, pd.DataFrame(rows), "held_constant", f"{s.name}: factors held constant or tied (listed once)")


def bad_rows_note(s: Sweep) -> str:
    """"; 4 of 9,000 rows malformed (skipped)" from results.csv's bad_rows / pool_rows (one pool per sweep:
    every trial counts the same rows, so the largest count is the pool's)."""
    r = s.results
    if "bad_rows" not in r or not r["bad_rows"].notna().any():
        return ""
    bad = int(r["bad_rows"].max())
    of = f" of {int(r['pool_rows'].max()):,}" if "pool_rows" in r and r["pool_rows"].notna().any() else ""
    return f"; {bad:,}{of} rows malformed (skipped, `bad_rows`)"


def tied_wording(p: Any) -> str:
    """"tied to r (= 2 × r)": a tied parameter in the design lines, named by the short name of the one it follows."""
    short = str(p.tie).rsplit(".", 1)[-1]
    return f"tied to {short} (= {p.times:g} × {short}" + (f" + {p.plus:g})" if p.plus else ")")


def evaluation_design(s: Sweep, val: Any) -> list[str]:
    """Design lines of an eval-only sweep (eval.only): what was evaluated and on what, no training."""
    c = s.config
    adapter = _get(c, "eval.adapter", None)
    what = "the base model" if not adapter else f"the adapter {adapter}"
    shots = val("eval.icl_shots")
    if shots == "searched":
        p = s.space.get("eval.icl_shots")
        shots = ", ".join(map(str, p.values)) if p is not None and p.values else "searched"
        k = f"k-shot, k = {shots} (in-context examples from {val('data.train')})"
    else:
        k = "zero-shot" if str(shots) in ("0", "–") else f"{shots}-shot (in-context examples from {val('data.train')})"
    heldout = _get(c, "eval.heldout", None)
    held = (f"held-out eval_loss on {val('data.eval_size')} rows of {val('data.train')}" if heldout
            else "no held-out eval_loss (eval.heldout)")
    sets = [f"perplexity of {', '.join(map(str, _get(c, 'eval.perplexity', []) or []))}"
            if _get(c, "eval.perplexity", None) else "",
            f"MCQ sets {', '.join(str(m.get('name')) for m in _get(c, 'eval.mcq', []) or [])}"
            if _get(c, "eval.mcq", None) else "",
            f"generation on {val('eval.generate.data')}" if _get(c, "eval.generate.data", None) else "",
            f"judged by {val('eval.judge.model')} ({val('eval.judge.mode')})" if _get(c, "eval.judge.enabled", False)
            else ""]
    return [
        f"- **Evaluation** of {what}, {k}: no training (eval.only). Model {val('model.name')} (quantization: "
        f"{val('model.quantization')})",
        f"- **Measured:** {'; '.join(x for x in [held, *sets] if x)}",
        f"- **Objective:** {s.metric} ({s.mode}); other metrics: "
        f"{', '.join(m for m in s.metrics if m != s.metric) or '–'}",
        f"- **Search:** {render.fmt(_get(c, 'search.algorithm'))}, num_samples "
        f"{render.fmt(_get(c, 'search.num_samples'))}, seeds {render.fmt(_get(c, 'search.seeds'))}",
        f"- **Budget:** {len(s.results)} evaluations, one report each; "
        f"{render.fmt(_get(c, 'resources.cpus_per_trial'))} CPU / {render.fmt(_get(c, 'resources.gpus_per_trial'))} "
        "GPU per trial",
    ]


def trials_table(s: Sweep) -> pd.DataFrame:
    cols = ["trial_id", "status"] + s.param_columns + [m for m in s.metrics] + [c for c in ("train_seconds",
                                                                                             "tokens_seen") if c in s.costs]
    df = s.results[[c for c in cols if c in s.results]].copy()
    if "error" in s.results and (s.results["status"] == "ERROR").any():
        df["error"] = s.results["error"].fillna("").astype(str).str.slice(0, 80)
    df.columns = [c.removeprefix("config/") for c in df.columns]
    if s.histories and not s.eval_only:
        df.insert(2, "reports", [_reports_cell(s, r) for _, r in s.results.iterrows()])
    # Best first; failed and unfinished trials stay in the table, at the end.
    if s.metric in df:
        rank = df["status"].map({"TERMINATED": 0, "EARLY_STOPPED": 1, "RUNNING": 2}).fillna(3)
        df = df.assign(_r=rank).sort_values(["_r", s.metric], ascending=[True, s.mode == "min"]).drop(columns="_r")
    if "train_loss" in df and s.metric != "train_loss" and "reports" in df:
        # A stopped trial's train_loss is of an earlier window of training than a finished one's: say which.
        stopped = df["status"] == "EARLY_STOPPED"
        df["train_loss"] = df["train_loss"].astype(object)
        df.loc[stopped, "train_loss"] = [f"{render.fmt(v)} (at report {k})" if finite(v) else "" for v, k in
                                         zip(df.loc[stopped, "train_loss"], df.loc[stopped, "reports"], strict=True)]
    return df


def _reports_cell(s: Sweep, row: pd.Series) -> str:
    """"2/4": reports the trial made of those its config plans (epochs × evals_per_epoch)."""
    h = s.histories.get(str(row["trial_id"]))
    k = int(h["training_iteration"].max()) if h is not None and len(h) else 0
    return f"{k}/{curves.planned_reports(s, row, max(k, 1))}"


def results(doc: Doc, a: Analysed) -> None:
    s = a.sweep
    doc.add(f"### All trials ({s.name})", "")
    doc.table(a, trials_table(s), "trials", f"{s.name}: every trial, finished first, best first")
    for f in a.figures:
        if f.stem.endswith("learning_curves"):
            doc.figure(f, "learning curves")
    if a.ablation.tables:
        doc.add(f"### Ablation ({s.name})", "",
                f"Finished trials only; early-stopped and failed trials are counted per level. Δ is the level "
                f"mean minus the baseline mean; 'test' names the test used (welch: Welch's t-test; noise: compared "
                f"with the sweep's seed noise; none: not testable, a single run on a side or identical runs on both "
                f"and no seed noise, so no p-value); '{WITHIN_NOISE}' marks p ≥ 0.05.", "")
        for factor, t in a.ablation.tables.items():
            doc.table(a, t, f"ablation_{render.slug(factor)}", f"{s.name}: {factor} (baseline "
                      f"{a.ablation.baselines[factor]})")
        doc.table(a, a.ablation.long, "ablation_all", f"{s.name}: ablation, every factor, level and metric",
                  inline=False)
    else:
        doc.add("No factor was varied, so there is no ablation table.", "")
    doc.add(f"### Sensitivity ({s.name})", "")
    if not a.sensitivity.importances.empty:
        doc.table(a, importance_table(a), "importance", f"{s.name}: hyperparameter importance "
                  f"(normalised; {a.sensitivity.n_trials} trials), read against the seed's own importance and "
                  "the ablation's noise verdicts")
    for note in a.sensitivity.notes:
        doc.add(f"> {note}", "")
    for f in a.figures:
        if f.stem.endswith(("importance", "marginal_effects", "interaction")):
            label = f.stem.removeprefix(a.prefix).replace("_", " ")
            if label == "interaction" and a.sensitivity.pair:
                label += f": {a.sensitivity.pair[0]} × {a.sensitivity.pair[1]}"
            doc.figure(f, label)
    checks(doc, a)
    if s.eval_only:
        return  # evaluations: nothing trained, nothing to stop early
    doc.add(f"### Cost and early stopping ({s.name})", "")
    for f in a.figures:
        if f.stem.endswith("pareto"):
            doc.figure(f, "objective vs cost")
    if not a.pareto.empty:
        doc.table(a, a.pareto, "pareto_front", f"{s.name}: Pareto-optimal trials ({s.metric} vs each cost)")
    sav = a.savings
    rows = [{"quantity": "trial seconds", "used": sav.actual_seconds, "if all ran to the end": sav.full_seconds,
             "saved": sav.saved_seconds},
            {"quantity": "training tokens", "used": sav.actual_tokens, "if all ran to the end": sav.full_tokens,
             "saved": sav.full_tokens - sav.actual_tokens}]
    doc.table(a, pd.DataFrame(rows), "early_stopping", f"{s.name}: compute saved by early stopping "
              f"({sav.n_stopped} trials stopped; full run = {sav.max_reports} reports)")


def importance_table(a: Analysed) -> pd.DataFrame:
    """The importances plus, per factor, how many of its levels differ from the baseline beyond noise."""
    df = a.sensitivity.importances.copy()

    def beyond(p: str) -> str:
        if p == SEED_PATH:
            return "(noise reference)"
        k, m = a.ablation.beyond_noise(p, a.sweep.metric)
        return f"{k} of {m}" + (" (all within noise or not testable)" if m and not k else "") if m else "–"

    df["levels beyond noise"] = df["parameter"].map(beyond)
    return df


def checks(doc: Doc, a: Analysed) -> None:
    """Tables of what the numbers rest on (analysis.checks), when there is something to show."""
    s, f = a.sweep, a.findings
    if not f.shortfalls.empty:
        doc.add(f"### Confounds ({s.name})", "")
        doc.table(a, f.shortfalls, "training_shortfalls", f"{s.name}: trials that trained on fewer examples than "
                  "their selection asked for (prompts longer than train.max_seq_len are dropped)")
    if not f.mcq.empty:
        doc.add(f"### MCQ sanity checks ({s.name})", "")
        flagged = f.mcq[f.mcq["flag"] != ""]
        doc.add(f"{len(flagged)} of {len(f.mcq)} (trial, set) results flagged: predictions collapsed onto one letter "
                f"(top-letter share ≥ {TOP_LETTER_MAX:.0%}) or accuracy not above chance (one-sided binomial test "
                "on the scored questions, p ≥ 0.05).", "")
        doc.table(a, f.mcq, "mcq_checks", f"{s.name}: MCQ accuracy against chance and the top-letter share")


MAX_COMPARED = 6  # settings of one sweep compared one by one with the reference; beyond that, its best ones


@dataclass(eq=False)  # compared by identity: a group holds a DataFrame
class Group:
    """The trials of one sweep that share every searched value but the seed: one row of the comparison."""

    analysed: Analysed
    setting: str
    rows: pd.DataFrame

    @property
    def label(self) -> str:
        return self.analysed.sweep.name + (f" ({self.setting})" if self.setting else "")

    def values(self, metric: str) -> list[float]:
        fin = self.rows[self.rows["status"] == "TERMINATED"]
        return fin[metric].astype(float).dropna().tolist() if metric in fin else []


def setting_groups(a: Analysed) -> list[Group]:
    """A sweep's trials by setting (its factors' values, seed excluded): levels of a searched factor are
    never averaged together (zero-shot and 3-shot baselines are two rows, not one mean)."""
    s = a.sweep
    if not s.factors:
        return [Group(a, "", s.results)]
    cols = [f"config/{p}" for p in s.factors]
    keys = s.results[cols].astype(str).agg("\x00".join, axis=1)
    return [Group(a, s.setting(g.iloc[0]), g) for _, g in s.results.groupby(keys, sort=False)]


def _mean_sd(v: list[float]) -> str:
    x = pd.Series(v, dtype=float)
    return f"{x.mean():.4g} ± {x.std():.2g}" if len(x) > 1 else (render.fmt(x.mean()) if len(x) else "–")


def comparison(doc: Doc, items: list[Analysed]) -> list[str]:
    """A table across sweeps on the metrics they share, one row per setting, and sentences from it."""
    shared = [m for m in items[0].sweep.metrics + ["train_seconds", "trainable_params"]
              if all(m in a.sweep.results and a.sweep.results[m].notna().any() for a in items)]
    groups = {id(a): setting_groups(a) for a in items}
    rows = [_comparison_row(a, g, shared) for a in items for g in groups[id(a)]]
    doc.table(None, pd.DataFrame(rows), "comparison", "Sweeps side by side, one row per setting (finished "
              "trials of that setting, seeds pooled; shared metrics)")
    key = items[0].sweep.metric
    if key not in shared:
        return ["The sweeps share no objective metric; compare them on the shared columns above."]
    return _comparison_sentences(items, groups, key)


def _comparison_row(a: Analysed, g: Group, shared: list[str]) -> dict[str, Any]:
    r = g.rows
    row: dict[str, Any] = {"sweep": a.sweep.name, "setting": g.setting or "–", "trials": len(r),
                           "finished": int((r["status"] == "TERMINATED").sum()),
                           "stopped": int((r["status"] == "EARLY_STOPPED").sum()),
                           "failed": int((r["status"] == "ERROR").sum()),
                           "objective": f"{a.sweep.metric} ({a.sweep.mode})"}
    row.update({f"{m} mean ± sd": _mean_sd(g.values(m)) for m in shared})
    return row


def _comparison_sentences(items: list[Analysed], groups: dict[int, list[Group]], key: str) -> list[str]:
    """Each other sweep's best settings against the first sweep's best, on the objective `key`."""
    mode = items[0].sweep.mode
    best = min if mode == "min" else max

    def mean(g: Group) -> float:
        v = g.values(key)
        return sum(v) / len(v) if v else math.nan

    scored = [g for a in items for g in groups[id(a)] if math.isfinite(mean(g))]
    if not scored:
        return [f"No setting of any sweep has a finished value of {key}."]
    ref = best([g for g in groups[id(items[0])] if g in scored] or scored, key=mean)
    out = []
    for a in items[1:]:
        mine = sorted([g for g in groups[id(a)] if g in scored], key=mean, reverse=mode == "max")[:MAX_COMPARED]
        for g in mine:
            c = compare(ref.values(key), g.values(key))
            sig = ("within noise" if c.within_noise else "beyond noise") if c.within_noise is not None else \
                "not testable"
            p = f", p = {c.p:.3f}" if math.isfinite(c.p) else ""
            out.append(f"Mean {key} of {g.label} differs from {ref.label} by {c.diff:+.3g} ({sig}{p}).")
    if is_tie([mean(g) for g in scored]):
        out.append(f"Every setting of every sweep reached the same mean {key} ({mean(scored[0]):.4g}): no difference.")
    else:
        top = best(scored, key=mean)
        out.append(f"The best {key} across sweeps is {mean(top):.4g} (mean of the finished trials of one setting), "
                   f"in {top.label}.")
    return out

# ---------------------------------------------------------------------------------------------
# Reproducibility


def _git(cwd: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def reproducibility(doc: Doc, items: list[Analysed], argv: str) -> None:
    for a in items:
        s, c = a.sweep, a.sweep.config
        nodes = sorted({str(n) for n in s.results.get("node_id", pd.Series(dtype=str)).dropna() if str(n)})
        doc.add(f"**{s.name}**", "",
                f"- Sweep command: `{c.get('command') or 'not recorded in sweep.yaml'}`",
                f"- Seeds: search.seeds {render.fmt(_get(c, 'search.seeds'))}; seeds run "
                f"{', '.join(map(str, s.seeds)) or '–'}; data split seed {render.fmt(_get(c, 'data.split_seed'))}",
                f"- Git commit of the sweep: {c.get('git_commit') or 'not recorded in sweep.yaml'}",
                f"- Hardware of the sweep: {c.get('hardware') or 'not recorded in sweep.yaml'}; nodes: "
                f"{', '.join(nodes) or '–'}; resources per trial "
                f"{render.fmt(_get(c, 'resources.cpus_per_trial'))} CPU, {render.fmt(_get(c, 'resources.gpus_per_trial'))} GPU",
                f"- Sweep directory: `{s.path}`", "")
    repo = Path(__file__).resolve().parent.parent
    commit = _git(repo, "rev-parse", "HEAD") or "unknown (not a git checkout)"
    dirty = " (uncommitted changes present)" if _git(repo, "status", "--porcelain", "--untracked-files=no") else ""
    versions = []
    for p in PACKAGES:
        try:
            versions.append(f"{p} {metadata.version(p)}")
        except metadata.PackageNotFoundError:
            pass
    doc.add("**Report**", "",
            f"- Report command: `{argv}`",
            f"- Code at report time: git {commit}{dirty}",
            f"- Python {platform.python_version()}; " + ", ".join(versions),
            f"- Report machine: {platform.platform()}, {platform.machine()}, {_cpus()} CPUs", "")


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


# ---------------------------------------------------------------------------------------------


def write_report(run_dirs: list[Path], out_dir: Path | None = None, baseline: dict | None = None, *,
                 wandb: bool | None = None, test: str = "welch", pair: tuple[str, str] | None = None) -> Path:
    """Write <out_dir>/report.md (+ tables/, figures/) for one or more sweep dirs; return its path.

    out_dir defaults to <first run dir>/report. baseline maps a dotted factor to its baseline
    level ({"lora.r": 8}); by default the configured value in sweep.yaml, else the first level.
    wandb: None follows each sweep's wandb.enabled; False never logs.
    test: "welch" (Welch's t) or "bootstrap" for the ablation's differences to the baseline.
    pair: the two parameters of the interaction heat map (default: the two most important).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window (the driver may run headless)
    t0 = time.perf_counter()
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("give at least one sweep directory")
    out_dir = Path(out_dir) if out_dir else run_dirs[0] / "report"
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    items = [analyse(s, fig_dir, prefix, baseline, test, pair) for s, prefix in _figure_prefixes(run_dirs)]
    multi = len(items) > 1
    doc = Doc(out_dir)
    _question_and_design(doc, items)
    doc.add("## Results", "")
    for a in items:
        results(doc, a)
    comp_sentences = []
    if multi:
        doc.add("### Comparison across sweeps", "")
        comp_sentences = comparison(doc, items)
    _analysis_and_conclusion(doc, items, comp_sentences)
    doc.add("## Reproducibility", "")
    argv = "python -m analysis.report " + " ".join(str(d) for d in run_dirs) + f" --out {out_dir}"
    if baseline:
        argv += " " + " ".join(f"--baseline {k}={v}" for k, v in baseline.items())
    reproducibility(doc, items, argv)
    report = out_dir / "report.md"
    doc.add(f"*Written in {time.perf_counter() - t0:.1f} s.*", "")
    report.write_text("\n".join(doc.lines), encoding="utf-8")
    if wandb is not False:
        lines = [wandb_status(a, report) for a in items]
        lines = [ln for ln in lines if ln]
        if lines:
            report.write_text("\n".join(doc.lines[:-2] + [f"- {ln}" for ln in lines] + [""] + doc.lines[-2:]),
                              encoding="utf-8")
    return report


def _figure_prefixes(run_dirs: list[Path]) -> list[tuple[Sweep, str]]:
    """Each sweep with the prefix of its figure files: none for one sweep, its name for several (and its
    position too when two sweeps share a name)."""
    sweeps = [load_sweep(d) for d in run_dirs]
    names = [s.name for s in sweeps]
    if len(sweeps) == 1:
        return [(sweeps[0], "")]
    return [(s, f"{render.slug(s.name)}_" if names.count(s.name) == 1 else f"{render.slug(s.name)}{i}_")
            for i, s in enumerate(sweeps)]


def _question_and_design(doc: Doc, items: list[Analysed]) -> None:
    multi = len(items) > 1
    doc.add(f"# Sweep report: {', '.join(a.sweep.name for a in items)}", "")
    doc.add("## Research question", "")
    for a in items:
        s = a.sweep
        q = s.config.get("description") or "(no description in sweep.yaml)"
        doc.add(f"- **{s.name}:** {q} Objective: {s.metric} ({'lower' if s.mode == 'min' else 'higher'} is better).")
    doc.add("", "## Experiment design", "")
    for a in items:
        if multi:
            doc.add(f"### {a.sweep.name}", "")
        design(doc, a)


def _analysis_and_conclusion(doc: Doc, items: list[Analysed], comp_sentences: list[str]) -> None:
    multi = len(items) > 1
    doc.add("## Analysis", "")
    for a in items:
        if multi:
            doc.add(f"### {a.sweep.name}", "")
        doc.add(*[f"- {t}" for t in analysis_sentences(a.sweep, a.ablation, a.sensitivity, a.savings, a.findings)], "")
    if comp_sentences:
        doc.add("### Across sweeps", "", *[f"- {t}" for t in comp_sentences], "")
    doc.add("## Conclusion", "")
    for a in items:
        prefix = f"**{a.sweep.name}:** " if multi else ""
        doc.add(prefix + " ".join(conclusion_sentences(a.sweep, a.findings, a.savings)), "")


def wandb_status(a: Analysed, report: Path) -> str:
    if not (a.sweep.config.get("wandb") or {}).get("enabled"):
        return ""
    from analysis.wandb_log import log_report, report_run_id

    run_id = report_run_id(a.sweep.name, a.sweep.results["trial_id"].astype(str).tolist())
    return log_report(a.sweep.config, a.sweep.path, a.sweep.name, a.tables, a.figures, report, run_id=run_id)


def parse_baseline(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--baseline {item!r}: expected key=value, e.g. --baseline lora.r=8")
        k, v = item.split("=", 1)
        out[k.strip().removeprefix("config/")] = yaml.safe_load(v)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+", type=Path, help="sweep directories (runs/<name>)")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default: <first run dir>/report)")
    ap.add_argument("--baseline", action="append", default=[], metavar="KEY=VALUE",
                    help="baseline level of a factor, e.g. lora.r=8 (repeatable)")
    ap.add_argument("--no-wandb", action="store_true", help="do not log to W&B even if the sweep enabled it")
    ap.add_argument("--test", choices=["welch", "bootstrap"], default="welch",
                    help="significance test of each level against the baseline (bootstrap: few seeds, non-normal)")
    ap.add_argument("--pair", metavar="A,B", help="parameters of the interaction heat map, e.g. lora.r,train.lr")
    args = ap.parse_args(argv)
    pair = tuple(p.strip() for p in args.pair.split(",")) if args.pair else None
    if pair is not None and len(pair) != 2:
        print(f"error: --pair: give two dotted parameters separated by a comma (got {args.pair!r})", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        path = write_report(args.run_dirs, args.out, parse_baseline(args.baseline),
                            wandb=False if args.no_wandb else None, test=args.test, pair=pair)  # type: ignore[arg-type]
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {path} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
