"""Figures and tables that must not mislead (issue 23), on small synthetic sweep directories: the compute
early stopping saved, learning curves a reader can tell apart, Pareto panels that rank something, tied
parameters, malformed rows, a stopped trial's train_loss."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
import yaml

from tests.test_analysis import _dump, write_simulated_sweep

matplotlib.use("Agg")


def _rank_sweep(root: Path) -> Path:
    """The default sweep's shape: 1 epoch, 4 reports, 25 steps, 10,551 tokens per trial; r=4 cut by ASHA after
    report 2, which came at step 12 of 25 (5,064 tokens: reports are placed on steps, not on token halves)."""
    cfg = _dump({"name": "rank", "train": {"epochs": 1, "evals_per_epoch": 4},
                 "search": {"algorithm": "grid", "metric": "eval_loss", "mode": "min", "seeds": [0],
                            "space": {"lora.r": {"grid": [4, 8, 16]}, "lora.alpha": {"tie": "lora.r", "times": 2}}}})
    run = root / "rank"
    run.mkdir(parents=True)
    (run / "sweep.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    steps, tokens = [6, 12, 18, 25], [2_532, 5_064, 7_597, 10_551]
    rows = []
    for i, (r, last, final) in enumerate([(4, 2, 1.9), (8, 4, 1.7), (16, 4, 1.6)]):
        tid = f"abc12_{i:05d}"
        tdir = run / "trials" / tid
        tdir.mkdir(parents=True)
        full = json.loads(json.dumps(cfg))
        full["lora"].update(r=r, alpha=2 * r)
        (tdir / "config.json").write_text(json.dumps(full))
        hist = [{"training_iteration": k + 1, "step": steps[k], "total_steps": 25, "tokens_seen": tokens[k],
                 "eval_loss": final + 0.1 * (3 - k), "train_loss": final + 0.1 * (3 - k) - 0.05,
                 "time_total_s": 2.0 + 10.0 * steps[k] / 25, "train_seconds": 10.0 * steps[k] / 25}
                for k in range(last)]
        (tdir / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hist))
        status = "EARLY_STOPPED" if last < 4 else "TERMINATED"
        rows.append({"trial_id": tid, "status": status, "stopped_early": str(last < 4).lower(),
                     "config/lora.r": r, "config/lora.alpha": 2 * r, "eval_loss": hist[-1]["eval_loss"],
                     "train_loss": hist[-1]["train_loss"], "train_seconds": hist[-1]["train_seconds"],
                     "tokens_seen": hist[-1]["tokens_seen"], "train_tokens": 10_551, "n_examples": 100,
                     "trainable_params": 1000 * r, "bad_rows": 4, "pool_rows": 9_000})
    with open(run / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return run


def test_savings_use_the_trials_planned_tokens(tmp_path: Path):
    from analysis.curves import savings
    from analysis.load import load_sweep

    sav = savings(load_sweep(_rank_sweep(tmp_path)))
    assert sav.n_stopped == 1
    assert sav.actual_tokens == 5_064 + 2 * 10_551
    # Its own budget (train_tokens x epochs), not 5,064 / 2 reports x 4 = 10,128.
    assert sav.full_tokens == 3 * 10_551
    row = sav.table.iloc[0]
    assert row["full tokens"] == 10_551 and row["full from"] == "planned tokens" and row["of"] == 4
    # Seconds scale by the same token share, start-up (2 s) not scaled.
    assert row["est. full seconds"] == pytest.approx(2.0 + 4.8 * 10_551 / 5_064)


def test_savings_without_train_tokens_use_steps(tmp_path: Path):
    from analysis.curves import savings
    from analysis.load import load_sweep

    run = _rank_sweep(tmp_path)
    df = pd.read_csv(run / "results.csv").drop(columns="train_tokens")
    df.to_csv(run / "results.csv", index=False)
    sav = savings(load_sweep(run))
    assert sav.table.iloc[0]["full tokens"] == pytest.approx(5_064 / 12 * 25)


def _captured_figure(monkeypatch) -> list:
    """Figures as they are saved (the plotting functions close them after)."""
    from matplotlib.figure import Figure

    saved: list = []
    orig = Figure.savefig

    def keep(self, *a, **k):
        saved.append(self)
        return orig(self, *a, **k)

    monkeypatch.setattr(Figure, "savefig", keep)
    return saved


def test_learning_curves_are_labelled_and_coloured_by_configuration(tmp_path: Path, monkeypatch):
    from analysis.curves import learning_curves
    from analysis.load import load_sweep

    saved = _captured_figure(monkeypatch)
    sweep = load_sweep(_rank_sweep(tmp_path))
    assert learning_curves(sweep, tmp_path / "lc.png") is not None
    ax = saved[-1].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"r=4", "r=8", "r=16 (best)"} <= set(labels)
    assert any(lb.startswith("early-stopped") for lb in labels)
    assert not any("alpha" in lb for lb in labels)  # tied: follows r
    lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    colours = {lb: lines[lb].get_color() for lb in ("r=4", "r=8", "r=16 (best)")}
    assert len({tuple(matplotlib.colors.to_rgba(c)) for c in colours.values()}) == 3
    assert lines["r=4"].get_linestyle() == "--"  # early-stopped stays dashed


def test_seeds_of_one_level_share_a_colour(tmp_path: Path, monkeypatch):
    from analysis.curves import learning_curves
    from analysis.load import load_sweep

    saved = _captured_figure(monkeypatch)
    learning_curves(load_sweep(write_simulated_sweep(tmp_path, "grid")), tmp_path / "lc.png")
    lines = [ln for ln in saved[-1].axes[0].get_lines() if ln.get_marker() in ("None", None, "")]
    by_r: dict[str, set] = {}
    for ln in lines:
        label = ln.get_label()
        if label.startswith("_"):
            continue
        r = label.split(",")[0]
        by_r.setdefault(r, set()).add(tuple(matplotlib.colors.to_rgba(ln.get_color())))
    assert set(by_r) == {"r=4", "r=8", "r=16"} and all(len(c) == 1 for c in by_r.values())
    assert len({next(iter(c)) for c in by_r.values()}) == 3


def test_pareto_drops_a_cost_every_trial_paid_alike(tmp_path: Path, monkeypatch):
    from analysis.curves import pareto
    from analysis.load import load_sweep

    saved = _captured_figure(monkeypatch)
    path, front = pareto(load_sweep(_rank_sweep(tmp_path)), tmp_path / "p.png")
    assert path is not None
    axes = saved[-1].axes
    # tokens_seen (10,551) and train_seconds (10 s) are the same for both finished trials: no panel for them.
    assert [ax.get_xlabel() for ax in axes] == ["trainable_params"]
    assert all(ax.get_legend() is not None for ax in axes)
    assert "tokens_seen" not in set(front["cost"])


def test_report_words_ties_bad_rows_and_a_stopped_trials_train_loss(tmp_path: Path):
    from analysis.report import write_report

    run = _rank_sweep(tmp_path)
    text = write_report([run], wandb=False).read_text()
    assert "alpha tied to r (= 2 × r)" in text and "alpha searched" not in text
    assert "4 of 9,000 rows malformed" in text
    trials = pd.read_csv(run / "report" / "tables" / "trials.csv", dtype={"trial_id": str}).set_index("trial_id")
    assert trials.loc["abc12_00000", "reports"] == "2/4" and trials.loc["abc12_00001", "reports"] == "4/4"
    assert trials.loc["abc12_00000", "train_loss"].endswith("(at report 2/4)")
    assert float(trials.loc["abc12_00001", "train_loss"]) == pytest.approx(1.65)
    # The report's own sentence on savings carries the planned-token figure.
    assert f"{10_551 - 5_064:,} training tokens" in text
