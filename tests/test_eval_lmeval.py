"""eval.lm_eval: lm-evaluation-harness tasks scored in-process on the trial's model (adapter applied), checked
against our own MCQ evaluator on the same questions with the same prompts and scoring."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch
from test_validation import refused

from harness.config import load_sweep
from trainables.evaluate import run_all
from trainables.evaluate.mcq import evaluate_set
from trainables.paths import find_data
from trainables.schema.eval import EvalConfig

pytest.importorskip("lm_eval", reason="lm-eval is part of [dev]: bash scripts/setup.sh --dev")

SUBJECT = "anatomy"  # 135 test questions, 5 dev exemplars
# The agreement test scores the first N_AGREE questions (lm-eval scores each choice in its own sequence, slow on a
# CPU); docs/lm_eval.md records the whole subject's agreement (135/135 at 0-shot).
N_AGREE = 40
# MMLU's lm-eval prompt (its mmlu task's description / doc_to_text / choices) over the local CSV files.
TASK = """task: local_mmlu_{subject}
dataset_path: csv
dataset_kwargs:
  data_files:
    test: {test}
    dev: {dev}
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
output_type: multiple_choice
description: "The following are multiple choice questions (with answers) about {words}.\\n\\n"
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choice0}}}}\\nB. {{{{choice1}}}}\\nC. {{{{choice2}}}}\\nD. {{{{choice3}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def write_task(folder, subject: str = SUBJECT, test: str | None = None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{subject}.yaml").write_text(TASK.format(
        subject=subject, words=subject.replace("_", " "), test=test or find_data(f"mcq/mmlu/test/{subject}_test.csv"),
        dev=find_data(f"mcq/mmlu/dev/{subject}_dev.csv")))
    return str(folder)


@pytest.fixture(scope="module")
def first_questions(tmp_path_factory):
    """An MMLU folder holding the first N_AGREE questions of SUBJECT (its whole dev set beside them), read
    by both lm-eval and our evaluator."""
    root = tmp_path_factory.mktemp("mmlu")
    (root / "test").mkdir()
    (root / "dev").mkdir()
    rows = _rows()[:N_AGREE]
    with open(root / "test" / f"{SUBJECT}_test.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    shutil.copy(find_data(f"mcq/mmlu/dev/{SUBJECT}_dev.csv"), root / "dev")
    return root


@pytest.fixture(scope="module")
def adapted():
    """The embedded model with a LoRA adapter whose B matrices are random (an untrained adapter changes
    nothing), so that scores on the adapted model differ from the base model's."""
    from peft import LoraConfig, get_peft_model

    from trainables.models import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tok, _ = load_model("smollm2-135m-instruct")
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    yield model.eval(), tok
    torch.set_num_threads(threads)


def ours(model, tok, shots: int, root) -> list[dict]:
    """Our MCQ evaluator's prediction and letter log-likelihoods for every question, in file order."""
    from trainables.schema.eval import MCQSet

    spec = MCQSet.model_validate({"name": "m", "preset": "mmlu", "subjects": [SUBJECT], "shots": shots,
                                  "path": str(root / "test"), "dev": str(root / "dev")})
    res = evaluate_set(model, tok, spec, batch_size=8, max_len=2048)
    assert res["n"] == N_AGREE and res["shots_used"] == shots and res["n_truncated"] == 0
    return res["predictions"]


def theirs(trial_dir) -> list[dict]:
    """lm-eval's prediction and log-likelihood of each choice, per document in file order."""
    samples = json.loads((trial_dir / f"lmeval_local_mmlu_{SUBJECT}.json").read_text())["samples"]
    samples.sort(key=lambda s: s["doc_id"])
    out = []
    for s in samples:
        scores = [float(r[0]) for r in s["filtered_resps"]]
        out.append({"pred": "ABCD"[max(range(4), key=lambda j: scores[j])], "scores": scores})
    return out


def gap(a: list[dict], b: list[dict]) -> float:
    return max(abs(x - y) for p, q in zip(a, b, strict=True) for x, y in zip(p["scores"], q["scores"], strict=True))


# 0-shot: every question of the file; 5-shot: the first 10 (lm-eval's `limit`)
@pytest.mark.slow  # minutes on 2 cores
@pytest.mark.parametrize("shots, limit", [(0, None), (5, 10)])
def test_lm_eval_and_our_mcq_agree_on_every_question(shots, limit, adapted, first_questions, tmp_path):
    model, tok = adapted
    task = write_task(tmp_path / "tasks", test=str(first_questions / "test" / f"{SUBJECT}_test.csv"))
    cfg = EvalConfig.model_validate({"lm_eval": {"tasks": [f"local_mmlu_{SUBJECT}"], "num_fewshot": shots,
                                                 "limit": limit, "include_path": task}})
    metrics = run_all(cfg, model, tok, tmp_path / "trial")
    n = limit or N_AGREE
    col = f"lmeval_local_mmlu_{SUBJECT}_"
    assert metrics[col + "n_scored"] == n and metrics[col + "shots"] == shots
    lm, mine = theirs(tmp_path / "trial"), ours(model, tok, shots, first_questions)[:n]
    assert [p["pred"] for p in lm] == [p["pred"] for p in mine]
    assert gap(lm, mine) < 2e-3  # the same log-likelihoods, up to float32 batching noise
    gold = ["ABCD"[int(r["answer"])] for r in _rows()[:n]]
    assert metrics[col + "acc"] == pytest.approx(sum(p["pred"] == g for p, g in zip(mine, gold, strict=True)) / n)
    assert 0 < metrics[col + "acc_stderr"] < 0.2
    if shots == 0:  # lm-eval scored the model with its adapter: the base model's log-likelihoods differ
        with model.disable_adapter():
            assert gap(lm, ours(model, tok, 0, first_questions)) > 0.05


def _rows() -> list[dict]:
    with open(find_data(f"mcq/mmlu/test/{SUBJECT}_test.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_columns_and_directions_come_from_the_task(tmp_path):
    cfg = EvalConfig.model_validate({"lm_eval": {"tasks": [f"local_mmlu_{SUBJECT}"], "limit": 3,
                                                 "include_path": write_task(tmp_path)}})
    d = cfg.directions()
    col = f"lmeval_local_mmlu_{SUBJECT}_"
    assert d[col + "acc"] == "max"
    assert d[col + "n_scored"] is None and d[col + "shots"] is None and d["lmeval_seconds"] is None


def test_an_lm_eval_metric_can_be_the_search_objective(tmp_path):
    cfg, _ = load_sweep("sweeps/smoke.yaml", [
        f"eval.lm_eval={{tasks: [local_mmlu_{SUBJECT}], limit: 2, include_path: {write_task(tmp_path)}}}",
        f"search.metric=lmeval_local_mmlu_{SUBJECT}_acc", "search.mode=null", "scheduler.type=fifo"])
    assert cfg.search.mode == "max"


@pytest.mark.parametrize("setting, expected", [
    ("{tasks: [no_such_task], include_path: TASKS}",
     "error: eval.lm_eval.tasks: unknown lm-eval task(s) 'no_such_task' (not built into lm-eval nor defined "
     "by the YAML files under TASKS); fix the name, or set eval.lm_eval.include_path to the folder of the task's YAML"),
    ("{tasks: [local_mmlu_anatomy], include_path: /nonexistent/tasks}",
     "error: eval.lm_eval.include_path: '/nonexistent/tasks' not found (looked in the working directory, "
     "HARNESS_DATA_DIR and ../shared/data); give the folder holding the task YAML files"),
    ("{tasks: []}", "error: eval.lm_eval.tasks: List should have at least 1 item after validation, not 0"),
], ids=["unknown_task", "missing_include_path", "no_tasks"])
def test_bad_lm_eval_settings_are_one_line_and_exit_2(setting, expected, tmp_path, capsys):
    tasks = write_task(tmp_path / "tasks")
    err = refused(["sweeps/smoke.yaml", f"output.dir={tmp_path / 'out'}", "--dry-run",
                   f"eval.lm_eval={setting.replace('TASKS', tasks)}"], capsys)
    assert err == [expected.replace("TASKS", tasks)]
    assert not (tmp_path / "out").exists()
