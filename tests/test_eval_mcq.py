"""MCQ: the generic loader on the real benchmark files, and log-likelihood scoring checked against an
independent per-choice computation (one unpadded forward per choice) on real rows."""

from __future__ import annotations

import pytest
import torch

from trainables.evaluate.config import MCQSet
from trainables.evaluate.mcq import build_prompt, candidates, choice_scores, evaluate_set
from trainables.evaluate.mcq_data import load_items, sample_per_subject, subject_of


@pytest.fixture(scope="module")
def model_tok():
    import torch

    from trainables.models import load_model

    # One thread: on a small shared CPU, two OpenMP threads contend and run ~10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tok, _ = load_model("smollm2-135m-instruct")
    yield model.eval(), tok
    torch.set_num_threads(threads)


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
