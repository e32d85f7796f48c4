"""analysis/recipe_sections.py on synthetic trial files (no model): the length-controlled judge score
separates "this trial writes longer answers" from "this trial's answers are better"."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from analysis.recipe_sections import companions, length_controlled


def test_length_controlled_score_removes_a_pure_length_advantage():
    # Trial L writes 100 words more than trial Q on every question; the judge adds 2 points per 100 words.
    # Q's answers are 1 point better at equal length. Raw scores favour L; controlled ones favour Q.
    rows = []
    for i in range(8):
        ref = 50 + 10 * i
        for trial, extra, quality in (("L", 100 + 5 * (i % 3), 5.0), ("Q", 0 + 5 * (i % 2), 6.0)):
            words = ref + extra
            rows.append({"trial": trial, "id": f"q{i}", "score": quality + 2.0 * (words - ref) / 100,
                         "words": words, "ref_words": ref})
    table, slope = length_controlled(pd.DataFrame(rows))
    got = table.set_index("trial")
    assert got.loc["L", "judge score"] > got.loc["Q", "judge score"]
    assert slope == pytest.approx(2.0, abs=1e-6)
    assert got.loc["L", "length-controlled score"] == pytest.approx(5.0, abs=1e-6)
    assert got.loc["Q", "length-controlled score"] == pytest.approx(6.0, abs=1e-6)


def test_without_references_lengths_are_compared_per_question():
    rows = [{"trial": t, "id": f"q{i}", "score": s, "words": w, "ref_words": float("nan")}
            for i in range(4) for t, s, w in (("a", 4.0 + i % 2, 10 + i), ("b", 4.0 + i % 2, 10 + i))]
    table, slope = length_controlled(pd.DataFrame(rows))
    assert table["length-controlled score"].isna().all()
    assert json.dumps(list(table["answers"])) == "[4, 4]"
    # identical lengths per question: nothing to regress on, said rather than guessed
    assert slope != slope


def test_perplexity_objective_brings_its_token_weighted_companion():
    assert companions("ppl_mean_public_test") == ["ppl_mean_public_test", "ppl_public_test"]
    assert companions("mcq_law_acc") == ["mcq_law_acc"]


def _pool_run(tmp_path, trials: dict[str, tuple[str, list[str]]]):
    """A finished sweep's files as the driver and trials write them: results.csv, sweep.yaml, each trial's
    config.json and selected_ids.json, and selection/pool_scores.csv (30 examples)."""
    import yaml

    run = tmp_path / "run"
    (run / "selection").mkdir(parents=True)
    pd.DataFrame({"id": [f"ex{i}" for i in range(30)], "conversation_words": [10 + 7 * i for i in range(30)],
                  "response_words": [5 + 3 * i for i in range(30)], "score": [3.5 + (i % 4) / 2 for i in range(30)]}
                 ).to_csv(run / "selection" / "pool_scores.csv", index=False)
    (run / "sweep.yaml").write_text(yaml.safe_dump({"name": "pooltest", "selection": {"strategy": "random"},
                                                    "search": {"metric": "judge_score", "mode": "max"}}))
    pd.DataFrame({"trial_id": list(trials), "judge_score": [5.0] * len(trials)}).to_csv(run / "results.csv",
                                                                                          index=False)
    for tid, (strategy, ids) in trials.items():
        (run / "trials" / tid).mkdir(parents=True)
        (run / "trials" / tid / "config.json").write_text(json.dumps({"selection": {"strategy": strategy}}))
        (run / "trials" / tid / "selected_ids.json").write_text(json.dumps(ids))
    return run


def test_pool_figure_draws_each_strategys_selected_ids(tmp_path):
    from analysis.load import load_sweep
    from analysis.recipe_sections import add_sections, pool_figure

    longest = [f"ex{i}" for i in range(29, 19, -1)]
    score = ["ex3", "ex7", "ex11", "ex15"]
    run = _pool_run(tmp_path, {"t1": ("score", score), "t2": ("longest", longest),
                               "t3": ("score", score),                # same picks, another lr: one panel
                               "t4": ("score", ["ex3", "ex7"])})      # another n: a panel of its own
    fig, drawn = pool_figure(load_sweep(run), tmp_path / "fig.png")
    assert fig is not None and fig.stat().st_size > 5000
    assert drawn == {"score": score, "longest": longest, "score (t4)": ["ex3", "ex7"]}
    out = tmp_path / "report"
    titles = add_sections(out, run, [])
    assert titles == ["The pool: length against score"]
    report = (out / "report.md").read_text()
    assert "figures/recipe_pool_length_score.png" in report and (out / "figures/recipe_pool_length_score.png").exists()
    # the table's means are the picks' own: longest's 10 picks average conversation words of ex20..ex29
    assert f"| longest | 10 | {sum(10 + 7 * i for i in range(20, 30)) / 10:.4g} |" in re.sub(" +", " ", report)


def test_driver_writes_the_pool_scores_of_a_scored_pool_only(tmp_path):
    import csv

    from harness.config import load_sweep
    from harness.rundir import write_pool_scores
    from trainables.data.pipeline import split_pool
    from trainables.data.selection.common import text_lengths

    cfg, _ = load_sweep("sweeps/recipes/instruct_judge.yaml", [f"output.dir={tmp_path}"])
    path = write_pool_scores(cfg)
    assert path == cfg.run_dir / "selection" / "pool_scores.csv"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    pool = split_pool(cfg.data)[0]
    assert [r["id"] for r in rows] == [e.id for e in pool]
    assert [float(r["score"]) for r in rows] == [e.score for e in pool]
    assert [int(r["conversation_words"]) for r in rows] == text_lengths(pool, "conversation")
    medical, _ = load_sweep("sweeps/recipes/domain_medical.yaml", [f"output.dir={tmp_path}"])
    assert write_pool_scores(medical) is None  # MedQuAD has no scores: nothing to plot


def _mcq_run(root, name: str, trials: dict[str, tuple[float, list[str]]], shots: list[int] | None = None):
    """A finished MCQ sweep's files: results.csv (status, mcq_law_acc, icl_shots for a baseline), sweep.yaml,
    and each trial's mcq_law.json predictions (letters for questions q0..q2, answer key A, B, C)."""
    import yaml

    run = root / name
    run.mkdir(parents=True)
    (run / "sweep.yaml").write_text(yaml.safe_dump({"name": name, "search": {"metric": "mcq_law_acc", "mode": "max"}}))
    frame = {"trial_id": list(trials), "status": ["TERMINATED"] * len(trials),
             "mcq_law_acc": [acc for acc, _ in trials.values()]}
    if shots is not None:
        frame["config/eval.icl_shots"] = shots
    pd.DataFrame(frame).to_csv(run / "results.csv", index=False)
    for tid, (_, letters) in trials.items():
        (run / "trials" / tid).mkdir(parents=True)
        predictions = [{"id": f"q{i}", "question": f"question {i}", "pred": p, "answer": "ABC"[i]}
                       for i, p in enumerate(letters)]
        (run / "trials" / tid / "mcq_law.json").write_text(json.dumps({"predictions": predictions}))
    return run


def test_tied_trials_are_shown_as_a_tie_not_as_a_best_trial(tmp_path):
    # The shipped law recipe on a CPU: both ranks, like the base model, answered "A" to everything (0.2667).
    # Before: the baseline table called one of them "LoRA, best trial" and the case studies said "No
    # predictions of mcq_law were found", though every trial had written them.
    from analysis.recipe_sections import add_sections

    base = _mcq_run(tmp_path, "law-baseline", {"b0": (1 / 3, ["A", "A", "A"]), "b5": (1 / 3, ["A", "B", "A"])},
                    shots=[0, 5])
    run = _mcq_run(tmp_path, "law", {"t8": (1 / 3, ["A", "A", "A"]), "t32": (1 / 3, ["A", "A", "A"])})
    out = tmp_path / "report"
    out.mkdir()
    add_sections(out, run, [base], case_set="mcq_law")
    report = (out / "report.md").read_text()
    assert "LoRA, best trial" not in report and "| LoRA, 2 trials tied (first shown) | t8 " in report
    cases = report.split("## Case studies", 1)[1]
    assert "No predictions" not in cases and "LoRA (tied)" in cases
    assert sum(line.startswith("| ") for line in cases.splitlines()) == 1 + 3
    # one trial ahead: it is the best trial, named as such
    run2 = _mcq_run(tmp_path / "2", "law", {"t8": (1 / 3, ["A", "A", "A"]), "t32": (2 / 3, ["A", "B", "A"])})
    (tmp_path / "report2").mkdir()
    add_sections(tmp_path / "report2", run2, [base], case_set="mcq_law")
    report2 = (tmp_path / "report2" / "report.md").read_text()
    assert "| LoRA, best trial | t32 " in re.sub(" +", " ", report2) and "LoRA best" in report2
