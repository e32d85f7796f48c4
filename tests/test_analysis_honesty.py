"""The report says only what its numbers carry, on hand-made sweep directories (results.csv + sweep.yaml in
the driver's layout, no model, no Ray): a tie is no difference, differences within noise recommend nothing,
a seed is never recommended, an untestable comparison has no p-value, levels of a searched factor are
never averaged together, an arm that trained on fewer examples than asked is a confound, MCQ sets whose
predictions collapse onto one letter or sit at chance are flagged, directions come from sweep.yaml, and
eval-only sweeps read as evaluations."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.report import write_report

DIRECTIONS = {"eval_loss": "min", "best_eval_loss": "min", "eval_perplexity": "min", "train_loss": "min"}


def sweep_dir(root: Path, name: str, rows: list[dict], *, space: dict | None = None, seeds: list | None = None,
              config: dict | None = None, metric: str = "eval_loss", mode: str = "min",
              directions: dict | None = DIRECTIONS) -> Path:
    """A sweep directory as the driver leaves it: results.csv (rows, TERMINATED unless said) and sweep.yaml."""
    run = root / name
    run.mkdir(parents=True)
    cfg = {"name": name, "description": f"{name} (hand-made)", "selection": {"strategy": "random", "n": 24},
           "train": {"epochs": 1, "evals_per_epoch": 1, "seed": 0, "max_seq_len": 128}, "lora": {"r": 8},
           "search": {"algorithm": "grid", "space": space or {}, "metric": metric, "mode": mode,
                      "seeds": seeds or [0]},
           "scheduler": {"type": "fifo"}, "wandb": {"enabled": False}, **(config or {})}
    if directions is not None:
        cfg["metric_directions"] = directions
    (run / "sweep.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    rows = [{"trial_id": f"t{i:03d}", "status": "TERMINATED", "stopped_early": "false", "error": "",
             "node_id": "n", "seed": r.get("config/train.seed", 0), **r} for i, r in enumerate(rows)]
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(run / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return run


def report(*runs: Path) -> tuple[str, Path]:
    path = write_report(list(runs), out_dir=runs[0].parent / "report", wandb=False)
    return path.read_text(), path.parent / "tables"


def section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    return text[start:text.index("\n## ", start + 3)]


STRATEGY = {"selection.strategy": {"grid": ["random", "longest", "ifd"]}}


def strategy_rows(losses: dict[str, list[float]], **extra) -> list[dict]:
    """One row per (strategy, seed); losses[strategy][seed]."""
    return [{"config/selection.strategy": s, "config/train.seed": seed, "eval_loss": v, "n_examples": 24,
             "train_tokens": 2400, **extra} for s, vals in losses.items() for seed, v in enumerate(vals)]


def test_a_tie_is_no_difference_and_names_no_best(tmp_path):
    run = sweep_dir(tmp_path, "tie", strategy_rows({s: [1.5, 1.5] for s in ("random", "longest", "ifd")}),
                    space=STRATEGY, seeds=[0, 1])
    text, tables = report(run)
    analysis, conclusion = section(text, "Analysis"), section(text, "Conclusion")
    assert "All 6 finished trials reached eval_loss = 1.5: no difference between the tested settings" in analysis
    assert "Best" not in analysis and "Use " not in conclusion
    assert "The tested settings made no difference: every finished trial reached eval_loss = 1.5, so no setting " \
           "is recommended." in conclusion
    # Zero variance on both sides and no seed noise: not testable, no p-value (was "p = 1.000, within noise").
    abl = pd.read_csv(tables / "ablation_selection_strategy.csv")
    compared = abl[~abl["level"].str.contains("baseline")]
    assert compared["verdict"].tolist() == ["not testable"] * 2 and compared["test"].tolist() == ["none"] * 2
    assert compared["p"].tolist() == ["–", "–"]
    assert "p = 1.000" not in text


def test_zero_variance_and_single_runs_are_not_testable():
    from analysis.stats import compare

    same = compare([1.0, 1.0], [1.2, 1.2])
    assert same.test == "none" and same.within_noise is None and math.isnan(same.p)
    assert same.diff == pytest.approx(0.2)
    # With seed noise measured elsewhere, the difference is compared to it instead.
    assert compare([1.0, 1.0], [1.2, 1.2], noise_sd=0.05).test == "noise"
    one = compare([1.0], [1.3])
    assert one.test == "none" and math.isnan(one.p)


def test_single_runs_say_not_testable_without_a_p_value(tmp_path):
    run = sweep_dir(tmp_path, "single", [{"config/lora.r": r, "eval_loss": v} for r, v in ((4, 1.6), (8, 1.5))],
                    space={"lora.r": {"grid": [4, 8]}})
    text, tables = report(run)
    abl = pd.read_csv(tables / "ablation_lora_r.csv")
    row = abl[abl["level"].astype(str) == "4"].iloc[0]
    assert row["verdict"] == "not testable" and row["p"] == "–"
    assert "Not testable" in section(text, "Analysis") and "lora.r = 4 vs 8 (+0.1)" in text
    assert "its difference to the others cannot be tested, so this single run is no evidence" in text
    conclusion = section(text, "Conclusion")
    assert "rest on single runs and cannot be tested, so no setting is recommended yet" in conclusion
    assert "Use " not in conclusion


def test_within_noise_recommends_nothing_and_never_a_seed(tmp_path):
    # subset_selection as shipped: every strategy within the seed noise. The conclusion used to say "no tested
    # change moved eval_loss beyond noise" and then "Use selection.strategy = ifd, train.seed = 1".
    losses = {"random": [1.50, 1.56], "longest": [1.52, 1.47], "ifd": [1.46, 1.53]}
    run = sweep_dir(tmp_path, "noise", strategy_rows(losses), space=STRATEGY, seeds=[0, 1])
    text, _ = report(run)
    conclusion = section(text, "Conclusion")
    assert "No tested change moved eval_loss beyond noise, so no setting is recommended" in conclusion
    assert "Use " not in conclusion and "train.seed" not in conclusion and "seed =" not in conclusion
    best = next(ln for ln in section(text, "Analysis").splitlines() if "Best single trial" in ln)
    assert "no tested change moved it beyond noise, so this single run is no evidence for its setting" in best
    assert "train.seed =" not in best  # the trial's seed is named as a replicate, not as part of its setting


def test_an_effect_beyond_noise_is_recommended_per_factor_without_the_seed(tmp_path):
    losses = {"random": [1.50, 1.51], "longest": [1.30, 1.31], "ifd": [1.505, 1.50]}
    run = sweep_dir(tmp_path, "effect", strategy_rows(losses), space=STRATEGY, seeds=[0, 1])
    text, _ = report(run)
    conclusion = section(text, "Conclusion")
    assert conclusion.splitlines()[2].startswith("Use selection.strategy = longest: it moves eval_loss by -0.2 "
                                                 "against random, beyond noise.")
    assert "seed" not in conclusion


def test_importance_is_flagged_when_the_factors_levels_are_within_noise(tmp_path):
    # Three seeds per strategy: enough trials for fANOVA, which gives the strategy most of the variance
    # although no level differs from the baseline beyond noise.
    losses = {"random": [1.50, 1.58, 1.43], "longest": [1.53, 1.44, 1.60], "ifd": [1.47, 1.55, 1.52]}
    run = sweep_dir(tmp_path, "imp", strategy_rows(losses), space=STRATEGY, seeds=[0, 1, 2])
    text, tables = report(run)
    imp = pd.read_csv(tables / "importance.csv")
    row = imp[imp["parameter"] == "selection.strategy"].iloc[0]
    assert row["levels beyond noise"] == "0 of 2 (all within noise or not testable)"
    assert imp.loc[imp["parameter"] == "train.seed", "levels beyond noise"].iloc[0] == "(noise reference)"
    assert "The importance of selection.strategy (" in text and "rests on differences within noise" in text


def test_levels_of_a_searched_factor_are_never_averaged_into_one_row(tmp_path):
    lora = sweep_dir(tmp_path, "lora", [{"config/lora.r": r, "eval_loss": v} for r, v in ((4, 1.40), (8, 1.30))],
                     space={"lora.r": {"grid": [4, 8]}})
    base = sweep_dir(tmp_path, "baselines", [{"config/eval.icl_shots": k, "eval_loss": v}
                                             for k, v in ((0, 2.4), (0, 2.4), (3, 1.9), (3, 1.9))],
                     space={"eval.icl_shots": {"grid": [0, 3]}}, config={"eval": {"only": True, "heldout": True}},
                     directions={"eval_loss": "min", "best_eval_loss": "min", "eval_perplexity": "min"})
    text, tables = report(lora, base)
    comp = pd.read_csv(tables / "comparison.csv")
    rows = {(r["sweep"], r["setting"]): r["eval_loss mean ± sd"] for _, r in comp.iterrows()}
    # Zero-shot and 3-shot are two rows (2.4 and 1.9), not one mean of 2.15.
    assert rows[("baselines", "eval.icl_shots = 0")] == "2.4 ± 0" and rows[("baselines", "eval.icl_shots = 3")] \
        == "1.9 ± 0"
    assert not comp["eval_loss mean ± sd"].str.startswith("2.15").any()
    assert "The best eval_loss across sweeps is 1.3 (mean of the finished trials of one setting), in lora " \
           "(lora.r = 8)." in text
    assert "Mean eval_loss of baselines (eval.icl_shots = 3) differs from lora (lora.r = 8) by +0.6 (not " \
           "testable)." in text


def test_an_arm_that_trained_on_fewer_examples_than_asked_is_a_confound(tmp_path):
    rows = strategy_rows({"random": [1.50, 1.51], "longest": [1.30, 1.31]})
    for r in rows:
        if r["config/selection.strategy"] == "longest":
            r.update(n_examples=11, dropped_prompt_too_long=13)
    run = sweep_dir(tmp_path, "confound", rows, space={"selection.strategy": {"grid": ["random", "longest"]}},
                    seeds=[0, 1])
    text, tables = report(run)
    short = pd.read_csv(tables / "training_shortfalls.csv")
    assert short["trial_id"].tolist() == ["t002", "t003"] and set(short["n_examples"]) == {11}
    assert set(short["asked"]) == {24} and set(short["dropped"]) == {13}
    assert ("Confound: trained on fewer examples than asked: selection.strategy = longest: 11 examples of 24 asked "
            "in 2 trial(s) (t002, t003), up to 13 prompts longer than train.max_seq_len dropped.") in text
    assert "Caveat: 1 setting(s) trained on fewer examples than asked" in section(text, "Conclusion")


def test_mcq_sets_whose_predictions_collapse_or_sit_at_chance_are_flagged(tmp_path):
    rows = []
    for r, (med_acc, share) in zip((4, 8), ((0.27, 0.97), (0.31, 0.55)), strict=True):
        rows.append({"config/lora.r": r, "eval_loss": 1.5, "mcq_acc": 0.5,
                     "mcq_medqa_acc": med_acc, "mcq_medqa_n_scored": 100, "mcq_medqa_chance": 0.25,
                     "mcq_medqa_top_letter_share": share,
                     "mcq_arc_acc": 0.62, "mcq_arc_n_scored": 100, "mcq_arc_chance": 0.25,
                     "mcq_arc_top_letter_share": 0.31})
    directions = {**DIRECTIONS, "mcq_acc": "max", "mcq_medqa_acc": "max", "mcq_arc_acc": "max",
                  "mcq_medqa_n_scored": None, "mcq_medqa_chance": None, "mcq_medqa_top_letter_share": None}
    run = sweep_dir(tmp_path, "mcq", rows, space={"lora.r": {"grid": [4, 8]}}, directions=directions)
    text, tables = report(run)
    checks = pd.read_csv(tables / "mcq_checks.csv").fillna("")
    flags = {(r["trial_id"], r["set"]): r["flag"] for _, r in checks.iterrows()}
    # 27 of 100 against chance 0.25: one-sided binomial p = 0.36; 31 of 100: p = 0.10; 62 of 100: p < 1e-13.
    assert flags[("t000", "medqa")] == ("predictions collapse onto one letter (97% of them); accuracy not above "
                                        "chance (0.27 vs 0.25, binomial p = 0.36, n = 100)")
    assert flags[("t001", "medqa")] == "accuracy not above chance (0.31 vs 0.25, binomial p = 0.1, n = 100)"
    assert flags[("t000", "arc")] == "" and flags[("t001", "arc")] == ""
    analysis = section(text, "Analysis")
    assert "MCQ set medqa: predictions collapse onto one letter in 1 of 2 trial(s) (top-letter share up to 97%)" \
        in analysis
    assert "MCQ set medqa: accuracy is not above chance (0.25) in 2 of 2 trial(s)" in analysis
    assert "MCQ set arc" not in analysis
    assert "Caveat: the accuracy of MCQ set(s) medqa is not evidence of knowledge" in section(text, "Conclusion")
    # The diagnostics are no quality metrics: not in the ablation table.
    assert "mcq_medqa_top_letter_share" not in pd.read_csv(tables / "ablation_all.csv")["metric"].tolist()


def test_directions_come_from_sweep_yaml_not_from_metric_names(tmp_path):
    rows = [{"config/lora.r": r, "config/train.seed": s, "eval_loss": 1.5 + 0.001 * s,
             "judge_win_rate": w + 0.001 * s, "ppl_test": 9.0 - w + 0.001 * s}
            for r, w in ((4, 0.3), (8, 0.7)) for s in (0, 1)]
    declared = sweep_dir(tmp_path / "a", "declared", rows, space={"lora.r": {"grid": [4, 8]}}, seeds=[0, 1],
                         directions={**DIRECTIONS, "judge_win_rate": "max", "ppl_test": "min"})
    _, tables = report(declared)
    long = pd.read_csv(tables / "ablation_all.csv")
    verdict = {m: long[(long["metric"] == m) & ~long["baseline"]]["verdict"].iloc[0] for m in ("judge_win_rate",
                                                                                               "ppl_test")}
    assert verdict == {"judge_win_rate": "worse", "ppl_test": "worse"}  # lora.r 4 vs baseline 8
    # A sweep.yaml from before metric_directions: only the objective has a direction; nothing is guessed by name.
    old = sweep_dir(tmp_path / "b", "old", rows, space={"lora.r": {"grid": [4, 8]}}, seeds=[0, 1], directions=None)
    _, tables = report(old)
    long = pd.read_csv(tables / "ablation_all.csv")
    assert long[(long["metric"] == "ppl_test") & ~long["baseline"]]["verdict"].iloc[0] == "higher"


def test_an_eval_only_sweep_is_described_as_an_evaluation(tmp_path):
    rows = [{"config/eval.icl_shots": k, "ppl_test": v} for k, v in ((0, 12.0), (3, 9.0))]
    run = sweep_dir(tmp_path, "baselines", rows, space={"eval.icl_shots": {"grid": [0, 3]}}, metric="ppl_test",
                    config={"eval": {"only": True, "perplexity": ["eval/test.json"]}},
                    directions={"ppl_test": "min", "loss_test": "min", "eval_seconds": None})
    text, _ = report(run)
    design = section(text, "Experiment design")
    assert "- **Evaluation** of the base model, k-shot, k = 0, 3 (in-context examples from" in design
    assert "no training (eval.only)" in design and "no held-out eval_loss (eval.heldout)" in design
    assert "perplexity of eval/test.json" in design
    for training in ("**Selection:**", "**Training:**", "**LoRA:**", "epoch"):
        assert training not in design
    assert "early stopping saved nothing" not in text
