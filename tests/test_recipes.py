"""Each course recipe (sweeps/recipes/) runs end to end at tiny size through harness.recipe on the real
model and data: baselines, the sweep, one report with the recipe's sections, the deliverable files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, read_csv, sweep_env


def _recipe(recipe: str, tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "harness.recipe", f"sweeps/recipes/{recipe}.yaml", f"output.dir={tmp_path}",
           *overrides]
    return subprocess.run(cmd, cwd=REPO, env=sweep_env(), capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_classical_zh_recipe_tiny(tmp_path):
    r = _recipe("classical_zh", tmp_path, "selection.n=16", "train.evals_per_epoch=2", "eval.perplexity_limit=4",
                "eval.generate.limit=3", "eval.generate.max_new_tokens=8", "wandb.enabled=false",
                "search.space={train.lr: {grid: [2.0e-3]}}")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    run = tmp_path / "classical_zh"
    base = read_csv(tmp_path / "classical_zh-baseline" / "results.csv")
    assert sorted(row["config/eval.icl_shots"] for row in base) == ["0", "4"]
    assert not any(row.get("gen_n") for row in base)  # no judge: the baselines write no answers
    rows = read_csv(run / "results.csv")
    assert len(rows) == 1 and float(rows[0]["ppl_mean_public_test"]) > 1 and float(rows[0]["ppl_public_test"]) > 1
    # the deliverable: the best trial's answers to private_test, in the file's order, as {id, output}
    answers = json.loads((run / "private_test_answers.json").read_text(encoding="utf-8"))
    test = json.loads((REPO.parent / "shared/data/classical_zh/private_test.json").read_text(encoding="utf-8"))
    assert [a["id"] for a in answers] == [t["id"] for t in test[:3]] and all(set(a) == {"id", "output"} for a in answers)
    report = (run / "report" / "report.md").read_text(encoding="utf-8")
    for section in ("## Baselines and the best trial", "## Learning curve", "## Deliverable"):
        assert section in report, section
    assert "base model, 0-shot" in report and "base model, 4-shot" in report and "LoRA, best trial" in report
    assert (run / "report" / "figures" / "recipe_curve_ppl_mean_public_test.png").stat().st_size > 1000
    # the curve has a point per report: public-test perplexity at every report, not only at the end
    hist = [json.loads(x) for x in (run / "trials" / rows[0]["trial_id"] / "metrics.jsonl").read_text().splitlines()]
    assert sum("ppl_mean_public_test" in h for h in hist) == 2


@pytest.mark.slow
@pytest.mark.parametrize("recipe, mcq, per_subject, subjects", [("domain_law", "law", 2, 3),
                                                                ("domain_medical", "med", 1, 5)])
def test_domain_recipe_tiny(tmp_path, recipe, mcq, per_subject, subjects):
    r = _recipe(recipe, tmp_path, "selection.n=16", "train.evals_per_epoch=1",
                f"eval.mcq.{mcq}.n_per_subject={per_subject}", "wandb.enabled=false",
                "search.space={lora.r: {grid: [8]}}")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    run, questions = tmp_path / recipe, per_subject * subjects
    base = read_csv(tmp_path / f"{recipe}-baseline" / "results.csv")
    assert sorted(row["config/eval.icl_shots"] for row in base) == ["0", "5"]
    assert {float(row[f"mcq_{mcq}_shots"]) for row in base} == {0.0, 5.0}  # 5-shot really had 5 solved questions
    row, = read_csv(run / "results.csv")
    assert 0 <= float(row[f"mcq_{mcq}_acc"]) <= 1 and float(row[f"mcq_{mcq}_n_scored"]) == questions
    report = (run / "report" / "report.md").read_text(encoding="utf-8")
    for section in ("## Baselines and the best trial", "## Case studies"):
        assert section in report, section
    cases = report.split("## Case studies", 1)[1]
    assert "base 0-shot" in cases and "base 5-shot" in cases and "LoRA best" in cases and "reference" in cases
    assert sum(line.startswith("| ") for line in cases.splitlines()) == 1 + min(questions, 6)  # header + 6 at most


@pytest.mark.slow
def test_instruct_judge_recipe_tiny_with_served_judge(tmp_path):
    import yaml

    r = _recipe("instruct_judge", tmp_path, "selection.n=16", "search.num_samples=1", "eval.generate.limit=2",
                "eval.generate.max_new_tokens=8", "eval.judge.max_tokens=24", "wandb.enabled=false",
                "search.space={selection.strategy: {choice: [longest]}, curriculum.order: {choice: [staged]}}")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert out.count("judge: starting llama.cpp on http://127.0.0.1:") == 2  # the baseline's and the sweep's
    run = tmp_path / "instruct_judge"
    base, = read_csv(tmp_path / "instruct_judge-baseline" / "results.csv")
    row, = read_csv(run / "results.csv")
    for got in (base, row):
        assert 1 <= float(got["judge_score"]) <= 10 and float(got["judge_n_scored"]) == 2, got
    pred = json.loads((run / "pred.json").read_text(encoding="utf-8"))
    test = json.loads((REPO.parent / "shared/data/eval/test_set_evol_instruct_150.json").read_text(encoding="utf-8"))
    assert [p["id"] for p in pred] == [t["id"] for t in test[:2]] and all(set(p) == {"id", "answer"} for p in pred)
    report = (run / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Baselines and the best trial" in report and "## Deliverable" in report
    assert "## Answer length and the judge" in report and "length-controlled score" in report
    assert "base model, 0-shot" in report and "LoRA, best trial" in report
    # the course's hint: the pool's length/score plane with the 16 examples the trial picked on it
    assert (run / "selection" / "pool_scores.csv").exists() and "## The pool: length against score" in report
    assert (run / "report" / "figures" / "recipe_pool_length_score.png").stat().st_size > 5000
    assert re.search(r"\| longest\s+\|\s+16 \|", report), report.split("## The pool", 1)[1][:600]
    # the second step, decoding on the best adapter without retraining, accepts that adapter
    best = yaml.safe_load((run / "best.yaml").read_text())["trial_id"]
    dry = subprocess.run([sys.executable, "-m", "harness.sweep", "sweeps/recipes/instruct_decoding.yaml", "--dry-run",
                          f"eval.adapter={run / 'trials' / best / 'adapter'}", f"output.dir={tmp_path}"],
                         cwd=REPO, env=sweep_env(), capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0 and "6 trials" in dry.stdout, dry.stdout[-2000:] + dry.stderr[-2000:]


def test_domain_medical_recipe_validates_and_its_5_shot_baseline_fits(tokenizer):
    """The medical recipe is the law recipe's plumbing on MMLU's layout (0-based index answers, one CSV per
    subject): checked here without running it, the sweep and its baseline variant pass the driver's MCQ
    checks, and every scored question really gets 5 solved exemplars from the dev files at eval.max_len."""
    from harness.config import load_sweep
    from harness.preflight import eval_input_problems
    from harness.recipe import baseline_overrides, header
    from trainables.evaluate.mcq import fit_prompts
    from trainables.evaluate.mcq_data import prepare

    recipe = REPO / "sweeps/recipes/domain_medical.yaml"
    head = header(recipe)
    assert head == {"baseline-shots": "0, 5", "case-studies": "mcq_med"}
    cfg, _ = load_sweep(str(recipe), [])
    base, _ = load_sweep(str(recipe), baseline_overrides(cfg.name, head["baseline-shots"], judged=False))
    assert cfg.search.metric == "mcq_med_acc" and base.eval.only
    assert eval_input_problems(cfg) == [] and eval_input_problems(base) == []
    spec, = cfg.eval.mcq_sets()
    prep = prepare(spec.model_copy(update={"shots": 5}))
    assert prep.problems == [] and prep.shots_source == "dev mcq/mmlu/dev"
    assert len(prep.items) == 20 and len({it.subject for it in prep.items}) == 5
    assert {len(it.choices) for it in prep.items} == {4} and {it.answer for it in prep.items} <= {0, 1, 2, 3}
    _, used, cut = fit_prompts(tokenizer, prep.items, prep.pool, prep.spec, cfg.eval.max_len)
    assert set(used) == {5} and cut == 0
