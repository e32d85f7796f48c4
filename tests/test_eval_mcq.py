"""MCQ: the generic loader on the real benchmark files, and log-likelihood scoring checked against an
independent per-choice computation (one unpadded forward per choice) on real rows."""

from __future__ import annotations

import json

import pytest
import torch

from trainables.evaluate.mcq import build_prompt, candidates, choice_scores, evaluate_set
from trainables.evaluate.mcq_data import load_items, sample_per_subject, subject_of
from trainables.schema.eval import MCQSet


def spec(**kw) -> MCQSet:
    return MCQSet.model_validate(kw)


def test_subject_from_file_name():
    from pathlib import Path

    assert subject_of(Path("abstract_algebra_test.csv")) == "abstract_algebra"
    assert subject_of(Path("accounting_val.csv")) == "accounting"
    assert subject_of(Path("agronomy.csv")) == "agronomy"
    assert subject_of(Path("ARC-Challenge-Dev.jsonl")) == "ARC-Challenge"


def test_mmlu_index_answers():
    loaded = load_items(spec(name="m", preset="mmlu", subjects=["abstract_algebra"]))
    items = loaded.items
    assert len(items) == 100 and loaded.n_skipped == 0
    first = items[0]
    assert first.subject == "abstract_algebra" and first.question.startswith("Find the degree")
    assert first.choices == ["0", "4", "2", "6"] and first.answer == 1 and first.labels == list("ABCD")


def test_cmmlu_letter_answers():
    items = load_items(spec(name="c", preset="cmmlu", subjects=["agronomy"])).items
    assert items[0].choices[1] == "土地" and items[0].answer == 1 and items[0].id == "agronomy/0"


def test_arc_nested_jsonl_with_numeric_labels():
    loaded = load_items(spec(name="a", preset="arc"))
    items = loaded.items
    assert len(items) == loaded.rows == 1150 and loaded.n_skipped == 0
    assert {len(it.choices) for it in items} == {3, 4, 5}  # 3/4/5-choice items, labels from the rows
    assert all(it.labels == [chr(65 + i) for i in range(len(it.choices))] for it in items)
    assert all(0 <= it.answer < len(it.choices) for it in items)


def test_answer_through_labels_or_index():
    from trainables.evaluate.mcq_parse import Skip, answer_indices

    def ans(raw, labels, kind, base=None, multi=False):
        try:
            return answer_indices(raw, labels, ["t"] * len(labels), kind, base, multi)
        except Skip as e:
            return e.args[0]

    assert ans("3", ["1", "2", "3", "4"], "auto") == [2]        # ARC-style numeric labels
    assert ans("2", list("ABCD"), "auto", base=0) == [2]        # MMLU index (the set said 0-based)
    assert ans("2", list("ABCD"), "auto") == "index_base"       # ... and when the set did not say
    assert ans("c", list("ABCD"), "auto") == [2]
    assert ans("ABD", list("ABCD"), "auto") == "multi_answer"
    assert ans("ABD", list("ABCD"), "auto", multi=True) == [0, 1, 3]
    assert ans("D", list("ABC"), "letter") == "answer_not_a_choice"  # names a dropped choice
    assert ans("1", list("ABCD"), "letter") == "answer_not_a_choice"


def test_fineval_and_ideafinbench():
    fin = load_items(spec(name="f", preset="fineval", subjects=["accounting"])).items
    assert fin and all(len(it.choices) == 4 for it in fin)
    cfa = load_items(spec(name="i", preset="ideafinbench"))
    assert len(cfa.items) == cfa.rows == 1220
    assert all(it.labels == ["A", "B", "C"] for it in cfa.items)  # D is empty in CFA items: dropped
    single = load_items(spec(name="p", path="mcq/ideafinbench/cpa_multi/val", choices=["A", "B", "C", "D"]))
    assert single.skipped == {"multi_answer": 1142} and not single.items  # counted, and (prepare) refused
    multi = load_items(spec(name="p", path="mcq/ideafinbench/cpa_multi/val", choices=["A", "B", "C", "D"],
                            multi=True))
    assert len(multi.items) == 1142 and not multi.skipped
    assert multi.items[0].answers == [0, 1, 2, 3]  # 'A,B,C,D'


def test_sampling_is_per_subject_and_deterministic():
    items = load_items(spec(name="m", preset="mmlu", subjects=["anatomy", "virology"])).items
    a = sample_per_subject(items, 3, seed=1)
    assert [it.id for it in a] == [it.id for it in sample_per_subject(items, 3, seed=1)]
    assert sorted({it.subject for it in a}) == ["anatomy", "virology"] and len(a) == 6
    assert [it.id for it in a] != [it.id for it in sample_per_subject(items, 3, seed=2)]


def independent(model, tok, prompt: str, conts: list[str]) -> list[float]:
    """Sum of log p(continuation tokens), one forward of prompt+continuation per choice."""
    out = []
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    for c in conts:
        c_ids = tok(c, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + c_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        out.append(sum(float(logp[len(p_ids) - 1 + j, t]) for j, t in enumerate(c_ids)))
    return out


@pytest.mark.parametrize("kw, score, template", [
    (dict(name="mmlu", preset="mmlu", subjects=["anatomy", "virology"], n_per_subject=2), "letter", "raw"),
    (dict(name="arc", preset="arc", n_per_subject=2, shots=2), "letter", "raw"),
    (dict(name="cfa", preset="ideafinbench", subjects=["economics"], n_per_subject=2), "text", "raw"),
    (dict(name="cmmlu", preset="cmmlu", subjects=["agronomy"], n_per_subject=2), "letter", "chat"),
])
@pytest.mark.slow
def test_scores_match_independent_computation(model_tok, kw, score, template):
    model, tok = model_tok
    s = spec(**kw, score=score, template=template)
    s = s.model_copy(update={"shots": s.shots or 0})  # as EvalConfig.mcq_sets() resolves it
    items = sample_per_subject(load_items(s).items, s.n_per_subject, s.seed)
    dev = load_items(s, dev=True).items[: s.shots] if s.shots else []
    prompts = [build_prompt(tok, it, dev, s) for it in items]
    if s.shots:
        assert prompts[0].count("Answer: ") == s.shots
    conts = [[c for _, c in candidates(it, s)] for it in items]
    ctxs = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    ours = choice_scores(model, tok, conts, ctxs, batch_size=4, max_len=4096)
    res = evaluate_set(model, tok, s, batch_size=4, max_len=4096)
    correct = 0
    for it, p, sc, cs in zip(items, prompts, ours, conts, strict=True):
        ref = independent(model, tok, p, cs)
        assert sc == pytest.approx(ref, abs=2e-3)
        correct += int(max(range(len(ref)), key=ref.__getitem__) == it.answer)
    assert res["n"] == len(items)
    assert res["acc"] == pytest.approx(correct / len(items))
    assert [p["id"] for p in res["predictions"]] == [it.id for it in items]


# ----------------------------------------------------------------------------- small files, the real model

def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


QUESTIONS = [
    ("Which vitamin deficiency causes scurvy?", ["Vitamin A", "Vitamin B12", "Vitamin C", "Vitamin D"]),
    ("Which organ produces insulin?", ["Liver", "Pancreas", "Kidney", "Spleen"]),
    ("What color is a clear daytime sky?", ["Green", "Blue", "Red", "Black"]),
    ("How many legs does a spider have?", ["Six", "Eight", "Ten", "Four", "Twelve"]),
]


def medqa_rows(answers: list[str]) -> list[dict]:
    return [{"question": q, "options": dict(zip("ABCDE", opts, strict=False)), "answer_idx": a}
            for (q, opts), a in zip(QUESTIONS, answers, strict=True)]


def test_accuracy_on_a_hand_checkable_set(model_tok, tmp_path):
    # Pass 1 reads what the model predicts; pass 2 sets the gold answers so that exactly the first three
    # match it: accuracy 3/4 whatever the model knows (the 0-shot prompt does not contain the gold answers).
    from collections import Counter

    from trainables.evaluate import run_all
    from trainables.schema.eval import EvalConfig

    model, tok = model_tok
    path = tmp_path / "medqa_test.jsonl"
    raw = {"name": "med", "preset": "medqa", "path": write_jsonl(path, medqa_rows(["A"] * 4))}
    first = evaluate_set(model, tok, spec(**raw, shots=0), batch_size=4, max_len=1024)
    preds = [p["pred"] for p in first["predictions"]]
    wrong = next(x for x in "ABCDE" if x != preds[3])
    write_jsonl(path, medqa_rows([*preds[:3], wrong]))
    m = run_all(EvalConfig.model_validate({"mcq": [raw]}), model, tok, tmp_path / "trial")
    assert m["mcq_med_acc"] == 0.75 and m["mcq_acc"] == 0.75 and m["mcq_med_macro_acc"] == 0.75
    assert (m["mcq_med_n_scored"], m["mcq_med_n_skipped"], m["mcq_med_shots"]) == (4, 0, 0)
    assert m["mcq_med_chance"] == pytest.approx((1 / 4 * 3 + 1 / 5) / 4)
    assert m["mcq_med_top_letter_share"] == Counter(preds).most_common(1)[0][1] / 4
    saved = json.loads((tmp_path / "trial" / "mcq_med.json").read_text())
    assert [p["pred"] for p in saved["predictions"]] == preds and saved["skipped"] == {}


@pytest.mark.slow
def test_multi_answer_set_scores_exact_sets_and_option_f1(model_tok, tmp_path):
    import csv

    from trainables.evaluate import run_all
    from trainables.schema.eval import EvalConfig

    model, tok = model_tok
    path = tmp_path / "cpa_multi_val.csv"

    def write(answers: list[str]) -> None:
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "question", "A", "B", "C", "D", "answer"])
            for i, a in enumerate(answers):
                w.writerow([i, f"Which of these are {['fruits', 'even numbers', 'colours'][i]}?",
                            *[["apple", "car", "pear", "stone"], ["2", "3", "4", "7"], ["red", "dog", "blue", "tea"]][i],
                            a])

    write(["A", "A", "A"])
    raw = {"name": "cpa", "path": str(path), "choices": ["A", "B", "C", "D"], "multi": True}
    first = evaluate_set(model, tok, spec(**raw, shots=0), batch_size=8, max_len=1024)
    assert all(len(p["scores"]) == 15 for p in first["predictions"])  # every non-empty set of 4 letters
    pred = [set(p["pred"]) for p in first["predictions"]]
    gold = [pred[0], pred[1] ^ {"D"}, set("ABCD") - pred[2] or {"A"}]  # exact; one letter off; disjoint
    write(["".join(sorted(g)) for g in gold])
    m = run_all(EvalConfig.model_validate({"mcq": [raw, {"name": "one", "preset": "mmlu", "subjects": ["anatomy"],
                                                          "n_per_subject": 2}]}), model, tok, tmp_path / "t")
    tp = sum(len(p & g) for p, g in zip(pred, gold, strict=True))
    fp = sum(len(p - g) for p, g in zip(pred, gold, strict=True))
    fn = sum(len(g - p) for p, g in zip(pred, gold, strict=True))
    assert m["mcq_cpa_set_acc"] == pytest.approx(1 / 3) and m["mcq_cpa_option_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["mcq_cpa_chance"] == pytest.approx(1 / 15) and m["mcq_cpa_n_scored"] == 3
    assert "mcq_cpa_acc" not in m and m["mcq_acc"] == m["mcq_one_acc"]  # never mixed into single-answer accuracy


INLINE_DEV = [
    {"question": "Which vitamin is fat-soluble?\nA. Vitamin C\nB. Vitamin D\nC. Vitamin B1\nD. Vitamin B12",
     "answer": "B.Vitamin D"},
    {"question": "Which is a bone?\nA. femur\nB. aorta\nC. liver\nD. lung", "answer": "A.femur"},
]


def test_few_shot_from_a_dev_file_in_its_own_layout(model_tok, tmp_path):
    from trainables.evaluate import run_all
    from trainables.schema.eval import EvalConfig

    model, tok = model_tok
    raw = {"name": "med", "preset": "medqa", "path": write_jsonl(tmp_path / "t.jsonl", medqa_rows(list("ABBB"))),
           "shots": 2, "dev": {"path": write_jsonl(tmp_path / "d.jsonl", INLINE_DEV), "choices": "inline",
                               "answer": "answer"}}
    m = run_all(EvalConfig.model_validate({"mcq": [raw]}), model, tok, tmp_path / "trial")
    assert m["mcq_med_shots"] == 2 and m["mcq_med_n_scored"] == 4
    saved = json.loads((tmp_path / "trial" / "mcq_med.json").read_text())
    assert [p["shots"] for p in saved["predictions"]] == [2, 2, 2, 2]
    s = EvalConfig.model_validate({"mcq": [raw]}).mcq_sets()[0]
    dev = load_items(s, dev=True).items
    prompt = build_prompt(tok, load_items(s).items[0], dev, s)
    assert prompt.startswith("The following are multiple choice questions (with answers) about t.\n\n"
                             "Which vitamin is fat-soluble?\nA. Vitamin C\nB. Vitamin D\nC. Vitamin B1\n"
                             "D. Vitamin B12\nAnswer: B\n\nWhich is a bone?\nA. femur\nB. aorta\nC. liver\nD. lung\n"
                             "Answer: A\n\nWhich vitamin deficiency causes scurvy?\n")


def test_exemplars_that_do_not_fit_are_dropped_and_counted(model_tok, tmp_path):
    from trainables.evaluate.mcq import fit_prompts

    model, tok = model_tok
    long_dev = [INLINE_DEV[0], {**INLINE_DEV[1], "question": "Which is a bone? " + "Think carefully. " * 60 +
                                "\nA. femur\nB. aorta\nC. liver\nD. lung"}]
    s = spec(name="med", preset="medqa", path=write_jsonl(tmp_path / "t.jsonl", medqa_rows(list("ABBB"))[:1]),
             shots=2, dev={"path": write_jsonl(tmp_path / "d.jsonl", long_dev), "choices": "inline",
                           "answer": "answer"})
    it, dev = load_items(s).items[0], load_items(s, dev=True).items
    one, two = (len(tok(build_prompt(tok, it, dev[:k], s), add_special_tokens=False)["input_ids"]) for k in (1, 2))
    max_len = (one + two) // 2
    assert fit_prompts(tok, [it], {"t": dev}, s, max_len)[1:] == ([1], 0)
    res = evaluate_set(model, tok, s, batch_size=4, max_len=max_len)
    assert res["shots_used"] == 1 and res["shots_requested"] == 2 and res["n_truncated"] == 0


def test_prompt_header_language_and_template_per_set(tokenizer, tmp_path):
    import csv

    path = tmp_path / "geography_val.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([["id", "question", "A", "B", "C", "D", "answer"],
                                 [0, "中国的首都是？", "上海", "北京", "广州", "深圳", "B"]])
    zh = spec(name="c", preset="ceval", path=str(path), subject_names={"geography": "地理"}, shots=0)
    it = load_items(zh).items[0]
    assert build_prompt(tokenizer, it, [], zh) == ("以下是关于地理的单项选择题，请直接给出正确答案的选项。\n\n"
                                                   "中国的首都是？\nA. 上海\nB. 北京\nC. 广州\nD. 深圳\n答案：")
    assert [c for _, c in candidates(it, zh)] == ["A", "B", "C", "D"]  # no space after a full-width colon
    own = zh.model_copy(update={"header": "Exam on {subject}:\n", "answer_prefix": "Reply:", "template": "chat"})
    chat = build_prompt(tokenizer, it, [], own)
    assert "Exam on 地理:\n中国的首都是？" in chat and chat.endswith("<|im_start|>assistant\n")
    assert [c for _, c in candidates(it, own)] == ["A", "B", "C", "D"]


def test_a_set_that_cannot_be_scored_fails_the_trial_with_its_reason(model_tok, tmp_path):
    from trainables.evaluate.mcq import MCQDataError

    model, tok = model_tok
    rows = [{"question": "q", "options": {"A": "x", "B": "y"}, "answer_idx": "A,B"}]
    s = spec(name="med", preset="medqa", path=write_jsonl(tmp_path / "t.jsonl", rows), shots=0)
    with pytest.raises(MCQDataError, match=r"^eval\.mcq\.med: 1 of 1 rows of .* cannot be scored \(1x multi_answer"):
        evaluate_set(model, tok, s, batch_size=4, max_len=1024)


@pytest.mark.slow
def test_eval_only_sweep_writes_counts_and_searched_shots_to_results(tmp_path):
    from helpers import read_csv, run_sweep

    mcq = write_jsonl(tmp_path / "medqa_test.jsonl", medqa_rows(list("ABBB")))
    qa = write_jsonl(tmp_path / "qa.jsonl", [{"q": f"Say {w}.", "a": w} for w in ("hello", "yes", "blue")])
    proc = run_sweep(
        "sweeps/baselines.yaml", f"output.dir={tmp_path}", "--no-report", "wandb.enabled=false", "data.eval_size=4",
        f"eval.mcq=[{{name: med, preset: medqa, path: {mcq}}}]",
        f"eval.perplexity=[{{path: {qa}, fields: {{instruction: q, output: a}}}}]",
        "search.space={eval.mcq.med.shots: {grid: [0, 2]}}",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = read_csv(tmp_path / "baselines" / "results.csv")
    assert sorted(r["config/eval.mcq.med.shots"] for r in rows) == ["0", "2"]
    for r in rows:
        assert r["status"] == "TERMINATED", r
        assert float(r["mcq_med_shots"]) == float(r["config/eval.mcq.med.shots"])
        assert (r["mcq_med_n_scored"], r["mcq_med_n_skipped"], r["mcq_med_chance"]) == ("4.0", "0.0", "0.2375")  # 4,4,4,5 options
        assert (r["ppl_qa_n_scored"], r["ppl_qa_n_skipped"]) == ("3.0", "0.0")
        assert float(r["ppl_mean_qa"]) > 1 and float(r["ppl_qa"]) > 1
