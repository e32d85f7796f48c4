"""Report pipeline on SIMULATED sweep directories (no Ray, no model): the helper
`write_simulated_sweep` writes results.csv, sweep.yaml, best.yaml and trials/*/{config.json,
metrics.jsonl} in the layout the driver writes (DESIGN.md), from a small deterministic
simulation of LoRA training curves. The numbers are made up; the layout is the contract.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# ---------------------------------------------------------------------------------------------
# Simulated sweep directories

# SweepConfig().model_dump() of the schema at the time of writing, so the simulation does not
# import the driver (the analysis must not need it either).
DEFAULTS = {
    "name": "", "description": "",
    "model": {"name": "smollm2-135m-instruct", "quantization": "none", "trust_remote_code": False},
    "data": {"train": "alpaca/random_9k.json", "format": "auto", "eval": None, "eval_size": 32, "split_seed": 1234},
    "selection": {"strategy": "random", "n": 100, "token_budget": None, "offset": 0},
    "curriculum": {"order": "none"},
    "train": {"epochs": 1, "lr": 0.0002, "batch_size": 4, "grad_accum": 1, "max_seq_len": 256, "warmup_ratio": 0.03,
              "scheduler": "cosine", "weight_decay": 0.0, "max_grad_norm": 1.0, "seed": 0, "evals_per_epoch": 4,
              "bf16": "auto", "device": "auto"},
    "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"},
    "eval": {"perplexity": []},
    "search": {"algorithm": "optuna", "space": {}, "num_samples": 1, "metric": "eval_loss", "mode": "min",
               "seeds": [0], "max_concurrent": 2},
    "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 2.0},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0}, "ray": {"address": None},
    "output": {"dir": "runs", "save_adapter": True},
    "wandb": {"enabled": True, "project": "lora-sweeps", "entity": None, "mode": "offline"},
}
SPACE_KINDS = ("choice", "grid", "uniform", "loguniform", "int", "tie")


def _dump(spec: dict) -> dict:
    """DEFAULTS overlaid with spec, space entries in model_dump form (every kind key present)."""
    out = json.loads(json.dumps(DEFAULTS))
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    out["search"]["space"] = {
        path: {**{k: None for k in SPACE_KINDS}, "times": 1.0, "plus": 0.0, **entry}
        for path, entry in out["search"]["space"].items()}
    return out


def _sim_spec(kind: str) -> dict:
    base = {"model": {"name": "smollm2-135m-instruct"}, "train": {"epochs": 2, "evals_per_epoch": 4},
            "scheduler": {"type": "asha", "grace_period": 2}, "wandb": {"enabled": False}}
    if kind == "grid":
        return {**base, "name": "sim-grid", "description": "Does a larger LoRA rank lower held-out loss? (simulated)",
                "search": {"algorithm": "grid", "seeds": [0, 1, 2], "metric": "eval_loss", "mode": "min",
                           "space": {"lora.r": {"grid": [4, 8, 16]}, "lora.alpha": {"tie": "lora.r", "times": 2},
                                     "train.lr": {"choice": [1e-4, 3e-4]}}}}
    if kind == "optuna":
        return {**base, "name": "sim-optuna", "description": "Which hyperparameters matter? (simulated)",
                "eval": {"perplexity": ["test.jsonl"]},
                "search": {"algorithm": "optuna", "num_samples": 16, "metric": "eval_loss", "mode": "min",
                           "space": {"train.lr": {"loguniform": [1e-5, 1e-3]}, "lora.r": {"choice": [4, 8, 16, 32]},
                                     "lora.dropout": {"uniform": [0.0, 0.2]},
                                     "selection.strategy": {"choice": ["random", "first"]}}}}
    if kind == "tiny":
        return {**base, "name": "sim-tiny", "description": "Smoke: two trials (simulated)",
                "search": {"algorithm": "optuna", "num_samples": 2, "metric": "eval_loss", "mode": "min",
                           "space": {"lora.r": {"choice": [8, 16]}}}}
    raise ValueError(kind)


def _sim_trials(kind: str, rng: np.random.Generator) -> list[dict]:
    """Trial parameter sets, the simulated final loss, and when (if ever) ASHA stops / the trial fails."""
    out = []
    if kind == "grid":
        for r in (4, 8, 16):
            for lr in (1e-4, 3e-4):
                for seed in (0, 1, 2):
                    loss = 1.60 - 0.06 * math.log2(r / 4) - 0.05 * (lr == 3e-4) + rng.normal(0, 0.01)
                    out.append({"params": {"lora.r": r, "lora.alpha": 2 * r, "train.lr": lr, "train.seed": seed},
                                "final": loss, "seed": seed})
        # Deterministic "ASHA": the weakest configuration is cut at rung 2 / 4; one trial runs out of memory.
        out[1]["stop"], out[2]["stop"], out[5]["stop"] = 2, 2, 4
        out[14]["error"] = 3
    elif kind == "optuna":
        for _ in range(16):
            lr = float(10 ** rng.uniform(-5, -3))
            r = int(rng.choice([4, 8, 16, 32]))
            dropout = float(rng.uniform(0, 0.2))
            strat = str(rng.choice(["random", "first"]))
            loss = (1.5 + 0.08 * (math.log10(lr) + 3.5) ** 2 - 0.03 * math.log2(r / 4) + 0.05 * (strat == "first")
                    + 0.1 * dropout + rng.normal(0, 0.01))
            out.append({"params": {"train.lr": lr, "lora.r": r, "lora.dropout": dropout, "selection.strategy": strat},
                        "final": loss, "seed": 0})
        worst = sorted(range(16), key=lambda i: -out[i]["final"])
        for i in worst[:4]:
            out[i]["stop"] = 2
        out[worst[4]]["stop"] = 4
    else:
        for r, loss in ((8, 1.55), (16, 1.52)):
            out.append({"params": {"lora.r": r}, "final": loss, "seed": 0})
    return out


def write_simulated_sweep(root: Path, kind: str = "grid", wandb: bool = False) -> Path:
    """Write a simulated sweep directory under root; return it. Deterministic (seeded numpy)."""
    cfg = _dump(_sim_spec(kind))
    cfg["wandb"]["enabled"] = wandb
    run_dir = root / cfg["name"]
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    dump = {**cfg, "command": f"python -m harness.sweep sweeps/{cfg['name']}.yaml output.dir={root}"}
    (run_dir / "sweep.yaml").write_text(yaml.safe_dump(dump, sort_keys=False))
    rng = np.random.default_rng(0)
    evals_per_epoch = cfg["train"]["evals_per_epoch"]
    reports = cfg["train"]["epochs"] * evals_per_epoch
    searched = list(cfg["search"]["space"])
    if kind == "grid":
        searched.append("train.seed")
    rows = []
    for i, t in enumerate(_sim_trials(kind, rng)):
        tid = f"sim{i:05d}"
        tdir = run_dir / "trials" / tid
        tdir.mkdir(parents=True)
        full = json.loads(json.dumps(cfg))
        for path, v in t["params"].items():
            sec, key = path.split(".")
            full[sec][key] = v
        (tdir / "config.json").write_text(json.dumps(full, indent=2))
        r = t["params"].get("lora.r", 8)
        last_it = t.get("stop") or t.get("error") or reports
        sec_per_report = 12.0 * (1 + r / 32)
        hist = []
        for it in range(1, last_it + 1):
            # Loss decays from 2.4 toward the final value; small train/eval gap.
            eval_loss = t["final"] + (2.4 - t["final"]) * math.exp(-it / 2.0) + 0.003 * rng.standard_normal()
            hist.append({"training_iteration": it, "step": it * 25, "epoch": it / evals_per_epoch,
                         # train_tokens (6,400 per epoch) x 2 epochs over 8 reports
                         "tokens_seen": it * 1_600, "eval_loss": eval_loss, "train_loss": eval_loss - 0.05,
                         "tokens_per_second": 1_600 / sec_per_report, "lr": 2e-4,
                         "time_total_s": 5.0 + it * sec_per_report})
        (tdir / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hist))
        status = "ERROR" if "error" in t else ("EARLY_STOPPED" if "stop" in t else "TERMINATED")
        last = hist[-1]
        row = {"trial_id": tid, "status": status, "stopped_early": str(status == "EARLY_STOPPED").lower(),
               "error": "torch.OutOfMemoryError: CUDA out of memory (simulated)" if status == "ERROR" else "",
               "node_id": "sim-node", "seed": t["seed"]}
        row.update({f"config/{p}": t["params"][p] for p in searched})
        row.update({"eval_loss": last["eval_loss"], "best_eval_loss": min(h["eval_loss"] for h in hist),
                    "eval_perplexity": math.exp(last["eval_loss"]), "train_loss": last["train_loss"]})
        if cfg["eval"]["perplexity"]:  # end-of-trial evaluation: only trials that ran to the end
            row["ppl_test"] = 1.1 * math.exp(last["eval_loss"]) if status == "TERMINATED" else ""
        row.update({"train_seconds": last["time_total_s"] - 5.0, "tokens_seen": last["tokens_seen"],
                    "train_tokens": 6400, "n_examples": 100,
                    "trainable_params": r * 2 * 576 * 30 * 7, "tokens_per_second": last["tokens_per_second"]})
        if status == "ERROR":
            for k in ("eval_loss", "best_eval_loss", "eval_perplexity", "train_loss"):
                row[k] = ""
        rows.append(row)
    with open(run_dir / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    best = min((r for r in rows if r["status"] != "ERROR"), key=lambda r: r["eval_loss"])
    (run_dir / "best.yaml").write_text(yaml.safe_dump({"trial_id": best["trial_id"], "metric": "eval_loss",
                                                       "value": best["eval_loss"]}))
    return run_dir


# ---------------------------------------------------------------------------------------------
# Checks shared by the tests


def markdown_tables(text: str) -> list[list[str]]:
    """Every Markdown table in text, as its lines."""
    tables, cur = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            tables.append(cur)
            cur = []
    if cur:
        tables.append(cur)
    return tables


def _cells(line: str) -> int:
    return len(re.split(r"(?<!\\)\|", line.strip())) - 2  # leading and trailing pipe


def assert_markdown_tables_parse(text: str) -> int:
    tables = markdown_tables(text)
    for t in tables:
        assert len(t) >= 2 and re.fullmatch(r"\|(---\|)+", t[1]), t[:2]
        widths = {_cells(line) for line in t}
        assert len(widths) == 1, f"inconsistent column counts {widths} in table starting {t[0]}"
    return len(tables)


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC, path
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50


SECTIONS = ["## Research question", "## Experiment design", "## Results", "## Analysis", "## Conclusion",
            "## Reproducibility"]


@pytest.fixture(scope="module")
def grid_report(tmp_path_factory) -> Path:
    from analysis.report import write_report

    root = tmp_path_factory.mktemp("runs")
    run = write_simulated_sweep(root, "grid")
    return write_report([run])


# ---------------------------------------------------------------------------------------------
# Tests


def test_report_layout_and_sections(grid_report: Path):
    # Default out_dir: <run dir>/report
    assert grid_report.name == "report.md" and grid_report.parent.name == "report"
    assert (grid_report.parent.parent / "results.csv").exists()
    text = grid_report.read_text()
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions), "sections out of order"
    out = grid_report.parent
    names = {p.stem for p in (out / "tables").iterdir()}
    for stem in names:  # every table in all three formats
        for ext in (".csv", ".tex", ".md"):
            assert (out / "tables" / f"{stem}{ext}").exists(), f"{stem}{ext}"
    for stem in ("trials", "search_space", "ablation_lora_r", "ablation_train_lr", "ablation_all", "importance",
                 "early_stopping", "pareto_front"):
        assert stem in names
    figs = sorted((out / "figures").glob("*.png"))
    assert {f.stem for f in figs} >= {"learning_curves", "pareto", "importance", "marginal_effects", "interaction"}
    for f in figs:
        assert_png(f)
    for f in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):  # every figure link resolves
        assert (out / f).exists(), f


def test_markdown_tables_parse(grid_report: Path):
    assert assert_markdown_tables_parse(grid_report.read_text()) >= 6
    for md in (grid_report.parent / "tables").glob("*.md"):
        assert assert_markdown_tables_parse(md.read_text()) == 1, md


def test_latex_tables_are_booktabs(grid_report: Path):
    for tex in (grid_report.parent / "tables").glob("*.tex"):
        body = tex.read_text()
        assert "\\toprule" in body and "\\midrule" in body and "\\bottomrule" in body
        header = [ln for ln in body.splitlines() if ln.startswith("\\begin{tabular}")][0]
        ncols = len(re.search(r"\{tabular\}\{(\w+)\}", header).group(1))
        rows = [ln for ln in body.splitlines() if ln.endswith("\\\\")]
        for row in rows:  # unescaped & separates cells
            assert len(re.split(r"(?<!\\)&", row)) == ncols, (tex.name, row)


def test_latex_compiles(grid_report: Path, tmp_path: Path):
    engine = shutil.which("pdflatex")
    if engine is None:
        pytest.skip("no pdflatex on this machine; the booktabs structure is checked above")
    tables = sorted((grid_report.parent / "tables").glob("*.tex"))
    doc = ("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[T1]{fontenc}\n\\usepackage[utf8]{inputenc}\n"
           "\\begin{document}\n" + "".join(t.read_text() + "\\clearpage\n" for t in tables) + "\\end{document}\n")
    (tmp_path / "all.tex").write_text(doc)
    r = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", "all.tex"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:]


def test_failed_and_stopped_trials_are_shown(grid_report: Path):
    import pandas as pd

    out = grid_report.parent
    trials = pd.read_csv(out / "tables" / "trials.csv")
    assert (trials["status"] == "ERROR").sum() == 1 and (trials["status"] == "EARLY_STOPPED").sum() == 3
    assert trials["error"].fillna("").str.contains("out of memory").any()
    abl = pd.read_csv(out / "tables" / "ablation_lora_r.csv")
    assert abl["stopped"].sum() == 3 and abl["failed"].sum() == 1
    text = grid_report.read_text()
    assert "1 failed" in text and "3 stopped early" in text


def test_ablation_numbers_and_baseline(grid_report: Path):
    import pandas as pd

    from analysis.stats import summarize

    run = grid_report.parent.parent
    res = pd.read_csv(run / "results.csv")
    fin = res[res["status"] == "TERMINATED"]
    long = pd.read_csv(grid_report.parent / "tables" / "ablation_all.csv")
    row = long[(long["factor"] == "lora.r") & (long["level"] == 16) & (long["metric"] == "eval_loss")].iloc[0]
    vals = fin[fin["config/lora.r"] == 16]["eval_loss"]
    s = summarize(vals.tolist())
    assert row["n"] == len(vals) and row["mean"] == pytest.approx(s.mean) and row["ci_low"] == pytest.approx(s.ci_low)
    base = fin[fin["config/lora.r"] == 8]["eval_loss"]  # lora.r default in sweep.yaml = 8
    assert row["diff"] == pytest.approx(vals.mean() - base.mean())
    assert long[(long["factor"] == "lora.r") & long["baseline"]]["level"].unique().tolist() == [8]
    # The seed is the replicate, and the tied alpha no factor of its own.
    assert set(long["factor"]) == {"lora.r", "train.lr"}
    held = (grid_report.parent / "tables" / "held_constant.md").read_text()
    assert "lora.alpha" in held and "tied" in held


def test_sentences_come_from_numbers(grid_report: Path):
    import pandas as pd

    run = grid_report.parent.parent
    res = pd.read_csv(run / "results.csv", dtype={"trial_id": str})
    fin = res[res["status"] == "TERMINATED"]
    best = fin.loc[fin["eval_loss"].idxmin()]
    text = grid_report.read_text()
    assert f"trial {best['trial_id']} reached eval_loss = {best['eval_loss']:.4g}" in text
    sav = pd.read_csv(grid_report.parent / "tables" / "early_stopping.csv")
    assert f"saving {sav['saved'].iloc[0]:,.0f} s" in text
    # The simulation builds in a rank effect (-0.06 per doubling) far above its seed noise (0.01).
    assert "lora.r = 16 instead of 8 changes eval_loss by -0.07" in text


def test_early_stopping_savings_estimate(tmp_path: Path):
    from analysis.curves import savings
    from analysis.load import load_sweep

    sweep = load_sweep(write_simulated_sweep(tmp_path, "grid"))
    sav = savings(sweep)
    assert sav.max_reports == 8 and sav.n_stopped == 3
    expected_full = 0.0
    for tid, h in sweep.histories.items():
        status = sweep.results.set_index("trial_id").loc[tid, "status"]
        k, secs = h["training_iteration"].max(), h["time_total_s"].iloc[-1]
        expected_full += secs / k * 8 if status == "EARLY_STOPPED" else secs
    assert sav.full_seconds == pytest.approx(expected_full)
    assert 0 < sav.saved_fraction < 1


def test_importance_finds_the_simulated_driver(tmp_path: Path):
    from analysis.load import load_sweep
    from analysis.sensitivity import build_study, importances

    sweep = load_sweep(write_simulated_sweep(tmp_path, "optuna"))
    study = build_study(sweep, sweep.factors)
    lr = study.trials[0].distributions["train.lr"]
    assert lr.log and lr.low == 1e-5 and lr.high == 1e-3
    assert type(study.trials[0].distributions["selection.strategy"]).__name__ == "CategoricalDistribution"
    sens = importances(sweep)
    assert sens.n_trials == 16 and not sens.notes
    # The simulated loss is quadratic in log10(lr): fANOVA must rank it first.
    assert sens.importances.iloc[0]["parameter"] == "train.lr"
    assert sens.importances["fanova"].sum() == pytest.approx(1.0)


def test_tiny_sweep_does_not_crash(tmp_path: Path):
    from analysis.report import write_report

    report = write_report([write_simulated_sweep(tmp_path, "tiny")], out_dir=tmp_path / "out")
    text = report.read_text()
    assert "Importance needs more trials" in text
    assert "Not testable" in text
    assert_markdown_tables_parse(text)


@pytest.mark.slow
def test_several_sweeps_and_cli_baseline(tmp_path: Path):
    import pandas as pd

    from analysis.report import main

    runs = [write_simulated_sweep(tmp_path, k) for k in ("grid", "optuna", "tiny")]
    out = tmp_path / "cmp"
    assert main([str(r) for r in runs] + ["--out", str(out), "--baseline", "lora.r=4"]) == 0
    text = (out / "report.md").read_text()
    assert "### Comparison across sweeps" in text and "The best eval_loss across sweeps is" in text
    comp = pd.read_csv(out / "tables" / "comparison.csv")
    # One row per setting, seeds pooled: sim-grid's 3 ranks x 2 learning rates, each optuna trial, both tiny ranks.
    assert comp["sweep"].value_counts().to_dict() == {"sim-grid": 6, "sim-optuna": 16, "sim-tiny": 2}
    assert list(dict.fromkeys(comp["sweep"])) == ["sim-grid", "sim-optuna", "sim-tiny"]
    assert comp.loc[comp["sweep"] == "sim-grid", "trials"].tolist() == [3] * 6
    assert "eval_loss mean ± sd" in comp.columns
    # Per-sweep outputs do not overwrite each other; the named baseline is used.
    abl = pd.read_csv(out / "tables" / "sim_grid_ablation_lora_r.csv")
    assert "4 (baseline)" in abl["level"].astype(str).tolist()
    assert (out / "figures" / "sim_optuna_learning_curves.png").exists()


@pytest.mark.slow
def test_partial_sweep_without_sweep_yaml(tmp_path: Path):
    """A sweep killed mid-way: no sweep.yaml, a RUNNING trial, a half-written history line."""
    from analysis.report import write_report

    run = write_simulated_sweep(tmp_path, "optuna")
    (run / "sweep.yaml").unlink()
    lines = (run / "results.csv").read_text().splitlines()
    lines[1] = lines[1].replace("TERMINATED", "RUNNING").replace("EARLY_STOPPED", "RUNNING")
    (run / "results.csv").write_text("\n".join(lines) + "\n")
    with open(next((run / "trials").iterdir()) / "metrics.jsonl", "a") as f:
        f.write('{"training_iteration": 9, "eval_lo')
    report = write_report([run])
    text = report.read_text()
    assert "still running" in text and "not recorded in sweep.yaml" in text


@pytest.mark.slow
def test_wandb_offline_run(tmp_path: Path, monkeypatch):
    pytest.importorskip("wandb")
    from analysis.report import write_report

    monkeypatch.setenv("WANDB_MODE", "offline")
    run = write_simulated_sweep(tmp_path, "tiny", wandb=True)
    text = write_report([run]).read_text()
    assert "W&B: tables and figures logged to an offline run" in text  # wandb is installed: it must work
    runs = list((run / "wandb").glob("offline-run-*"))
    assert runs and all(any(r.glob("*.wandb")) for r in runs)
    assert write_report([run], wandb=False).read_text().count("W&B:") == 0


def test_rerunning_the_report_updates_one_wandb_run(tmp_path: Path, monkeypatch):
    pytest.importorskip("wandb")
    from analysis.report import write_report

    monkeypatch.setenv("WANDB_MODE", "offline")
    run = write_simulated_sweep(tmp_path, "tiny", wandb=True)
    write_report([run])
    write_report([run])
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and runs[0].name.endswith("-report-sim-tiny")
    assert (runs[0] / "run-report-sim-tiny.wandb").exists()


def test_missing_results_is_a_clear_error(tmp_path: Path):
    from analysis.report import main

    assert main([str(tmp_path / "nope")]) == 2


@pytest.mark.slow
def test_module_runs_as_script(tmp_path: Path):
    run = write_simulated_sweep(tmp_path, "tiny")
    r = subprocess.run([sys.executable, "-m", "analysis.report", str(run)], capture_output=True, text=True,
                       timeout=300, cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / "report" / "report.md").exists()


@pytest.mark.slow
def test_cli_bootstrap_test_and_chosen_heatmap_pair(tmp_path: Path):
    import pandas as pd

    from analysis.report import main

    run = write_simulated_sweep(tmp_path, "grid")  # 3 seeds per rank level: the bootstrap applies
    out = tmp_path / "boot"
    assert main([str(run), "--out", str(out), "--test", "bootstrap", "--pair", "lora.r,train.seed"]) == 0
    abl = pd.read_csv(out / "tables" / "ablation_lora_r.csv")
    compared = abl[~abl["level"].astype(str).str.contains("baseline")]
    assert len(compared) == 2 and set(compared["test"]) == {"bootstrap"}
    assert (out / "figures" / "interaction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([str(run), "--pair", "lora.r"]) == 2  # one name is not a pair
