"""MCQ layouts public benchmarks use, each on a small file the test writes itself: exact parsed options and
answers, exact scored / skipped counts, and the exact lines that refuse a set before any trial starts
(no model needed: the driver's preflight and every trial run the same mcq_data.prepare)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from trainables.evaluate import input_problems
from trainables.evaluate.mcq_data import exemplars_for, load_items, prepare, sample_per_subject
from trainables.schema.eval import EvalConfig, MCQSet

MEDQA = [  # jind11/MedQA: options as a mapping label -> text, answer_idx a letter, answer the text
    {"question": "Which vitamin deficiency causes scurvy?", "answer": "Vitamin C", "answer_idx": "C",
     "options": {"A": "Vitamin A", "B": "Vitamin B12", "C": "Vitamin C", "D": "Vitamin D", "E": "Vitamin K"}},
    {"question": "Which organ produces insulin?", "answer": "Pancreas", "answer_idx": "B",
     "options": {"A": "Liver", "B": "Pancreas", "C": "Kidney", "D": "Spleen", "E": "Heart"}},
    {"question": "Normal adult resting heart rate (beats per minute)?", "answer": "60-100", "answer_idx": "A",
     "options": {"A": "60-100", "B": "20-40", "C": "120-160", "D": "180-220", "E": "5-10"}},
]


def jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def csv_file(path: Path, rows: list[list], header: list[str] | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def spec(**kw) -> MCQSet:
    return MCQSet.model_validate({"name": "s", **kw}).model_copy(update={"shots": kw.get("shots") or 0})


def parsed(s: MCQSet) -> list[tuple[str, list[str], list[int]]]:
    return [(it.question, it.choices, it.answers) for it in load_items(s).items]


MEDQA_PARSED = [(r["question"], list(r["options"].values()), ["ABCDE".index(r["answer_idx"])]) for r in MEDQA]


@pytest.mark.parametrize("layout", [
    {"preset": "medqa"},                                                         # choices: options (a mapping)
    {"choices": [f"options.{k}" for k in "ABCDE"], "answer": "answer_idx"},      # dotted paths in the list form
    {"choices": "options", "answer": "answer"},                                  # the answer as the option's text
    {"choices": "options", "answer": "answer", "answer_kind": "text"},
])
def test_options_as_a_mapping_are_read_as_label_to_text(tmp_path, layout):
    s = spec(path=str(jsonl(tmp_path / "medqa_test.jsonl", MEDQA)), **layout)
    loaded = load_items(s)
    assert parsed(s) == MEDQA_PARSED and loaded.rows == 3 and loaded.n_skipped == 0
    assert all(it.labels == list("ABCDE") for it in loaded.items)
    assert prepare(s).problems == []


def test_options_that_are_only_their_labels_are_refused(tmp_path):
    rows = [{"question": f"q{i}", "options": ["A", "B", "C", "D"], "answer": "B"} for i in range(4)]
    path = jsonl(tmp_path / "labels.jsonl", rows)
    assert prepare(spec(path=str(path), choices="options")).problems == [
        "eval.mcq.s.choices: the options read from 'options' are just their labels (A, B, C, D in labels/labels#0); "
        "point choices at the option texts (a mapping {A: text} is read as label -> text, a list of columns as "
        "one option each)"]


def test_pubmedqa_yes_no_maybe_with_a_context(tmp_path):
    rows = [{"QUESTION": "Does aspirin reduce fever?", "CONTEXTS": ["Trial one.", "Trial two."],
             "final_decision": "yes"},
            {"QUESTION": "Is the moon made of cheese?", "CONTEXTS": ["Survey."], "final_decision": "no"},
            {"QUESTION": "Does coffee help?", "CONTEXTS": ["Mixed results."], "final_decision": "maybe"}]
    loaded = load_items(spec(preset="pubmedqa", path=str(jsonl(tmp_path / "pqa.jsonl", rows))))
    assert [(it.context, it.choices, it.answers) for it in loaded.items] == [
        ("Trial one.\nTrial two.", ["yes", "no", "maybe"], [0]),
        ("Survey.", ["yes", "no", "maybe"], [1]),
        ("Mixed results.", ["yes", "no", "maybe"], [2])]


def test_ten_options_as_a_list_of_strings(tmp_path):
    # MMLU-Pro: up to 10 options in a list, the answer a letter, the subject in a column.
    rows = [{"question": "Pick the tenth.", "options": [f"opt{i}" for i in range(10)], "answer": "J",
             "category": "math"},
            {"question": "Pick the third.", "options": ["x", "y", "z"], "answer": "C", "category": "law"}]
    loaded = load_items(spec(preset="mmlu_pro", path=str(jsonl(tmp_path / "pro.jsonl", rows))))
    assert [(it.subject, it.labels[-1], it.answers) for it in loaded.items] == [("math", "J", [9]), ("law", "C", [2])]


def test_list_of_label_text_objects_with_numeric_labels(tmp_path):
    # ARC: some rows label their options 1-4 and answer '3'; the model is shown A-D.
    rows = [{"id": "q1", "question": {"stem": "Which is a gas?", "choices": [
        {"label": "1", "text": "ice"}, {"label": "2", "text": "steam"}, {"label": "3", "text": "rock"}]},
        "answerKey": "2"}]
    loaded = load_items(spec(preset="arc", path=str(jsonl(tmp_path / "arc.jsonl", rows))))
    assert [(it.id, it.labels, it.answers) for it in loaded.items] == [("arc/q1", ["A", "B", "C"], [1])]


@pytest.mark.parametrize("answers, kind, expected, skipped", [
    (["2", "0", "1", "3"], "auto", [[2], [0], [1], [3]], {}),          # a 0 appears: 0-based (MMLU)
    (["2", "4", "1", "3"], "auto", [[1], [3], [0], [2]], {}),          # a 4 of 4 appears: 1-based (MedMCQA's cop)
    (["2", "1", "1", "3"], "index1", [[1], [0], [0], [2]], {}),
    (["2", "1", "1", "3"], "auto", [], {"index_base": 4}),             # could be either: refused, not guessed
])
def test_index_answers_count_from_0_or_1(tmp_path, answers, kind, expected, skipped):
    rows = [[f"question {i}", "w", "x", "y", "z", a] for i, a in enumerate(answers)]
    path = csv_file(tmp_path / "medmcqa.csv", rows, ["question", "opa", "opb", "opc", "opd", "cop"])
    s = spec(path=str(path), choices=["opa", "opb", "opc", "opd"], answer="cop", answer_kind=kind)
    loaded = load_items(s)
    assert [it.answers for it in loaded.items] == expected and dict(loaded.skipped) == skipped
    if skipped:
        assert prepare(s).problems[0] == (
            "eval.mcq.s.answer_kind: 4 numeric answers could count from 0 or from 1 (e.g. medmcqa.csv row 0 "
            "(answer '2'; fields: question, opa, opb, opc, opd, cop)); set eval.mcq.s.answer_kind: index "
            "(0-based) or index1 (1-based)")


def test_headerless_csv_needs_its_column_names(tmp_path):
    # MMLU's original files have no header line: without csv_columns the first question becomes the header.
    rows = [["What is 1+1?", "1", "2", "3", "4", "B"], ["What is 2+2?", "4", "5", "6", "7", "A"]]
    path = csv_file(tmp_path / "math_test.csv", rows, None)
    s = spec(path=str(path), choices=["A", "B", "C", "D"], answer="answer", answer_kind="letter")
    assert prepare(s).problems == [
        f"eval.mcq.s: 1 of 1 rows of {path} cannot be scored (1x no_question: no question text; e.g. no_question: "
        "math_test.csv row 0 (answer ''; fields: What is 1+1?, 1, 2, 3, 4, B)); point eval.mcq.s.question at the "
        "question column (now 'question'); a CSV without a header line needs eval.mcq.s.csv_columns"]
    s = spec(path=str(path), choices=["A", "B", "C", "D"], answer="answer", answer_kind="letter",
             csv_columns=["question", "A", "B", "C", "D", "answer"])
    assert parsed(s) == [("What is 1+1?", ["1", "2", "3", "4"], [1]), ("What is 2+2?", ["4", "5", "6", "7"], [0])]


def test_letter_answers_of_chinese_exam_csvs(tmp_path):
    rows = [[0, "中国的首都是？", "上海", "北京", "广州", "深圳", "B"], [1, "一加一等于？", "一", "二", "三", "四", "b"]]
    path = csv_file(tmp_path / "ceval" / "geography_val.csv", rows, ["id", "question", "A", "B", "C", "D", "answer"])
    loaded = load_items(spec(preset="ceval", path=str(path.parent)))
    assert [(it.id, it.answers) for it in loaded.items] == [("geography/0", [1]), ("geography/1", [1])]


def test_yes_no_as_json_booleans(tmp_path):
    rows = [{"question": "Is water wet?", "answer": True}, {"question": "Is fire cold?", "answer": False}]
    loaded = load_items(spec(path=str(jsonl(tmp_path / "boolq.jsonl", rows)), fixed_choices=["no", "yes"]))
    assert [it.answers for it in loaded.items] == [[1], [0]]


MULTI = [[f"q{i}", "red", "green", "blue", "grey", a] for i, a in enumerate(["ABD", "A,C", "B、C", "D"])]


def test_multi_answer_sets_are_sets_of_letters(tmp_path):
    path = csv_file(tmp_path / "cpa_multi.csv", MULTI, ["question", "A", "B", "C", "D", "answer"])
    single = spec(path=str(path), choices=["A", "B", "C", "D"])
    assert dict(load_items(single).skipped) == {"multi_answer": 3}
    assert prepare(single).problems == [
        f"eval.mcq.s: 3 of 4 rows of {path} cannot be scored (3x multi_answer: the answer names several options "
        "in a single-answer set; e.g. multi_answer: cpa_multi.csv row 0 (answer 'ABD'; fields: question, A, B, C, "
        "D, answer)); set eval.mcq.s.multi: true to score them as sets of letters (exact-set accuracy and "
        "per-option F1); or raise eval.mcq.s.max_skipped_fraction (now 0.05)"]
    multi = spec(path=str(path), choices=["A", "B", "C", "D"], multi=True)
    assert [it.answers for it in load_items(multi).items] == [[0, 1, 3], [0, 2], [1, 2], [3]]
    assert prepare(multi).problems == []


def test_skipped_rows_up_to_the_threshold(tmp_path):
    rows = [[f"q{i}", "w", "x", "y", "z", "" if i < 2 else "A"] for i in range(20)]  # 2 of 20 without an answer
    path = csv_file(tmp_path / "t.csv", rows, ["question", "A", "B", "C", "D", "answer"])
    strict = spec(path=str(path), choices=["A", "B", "C", "D"])
    loaded = load_items(strict)
    assert (len(loaded.items), dict(loaded.skipped)) == (18, {"no_answer": 2})
    assert prepare(strict).problems == [
        f"eval.mcq.s: 2 of 20 rows of {path} cannot be scored (2x no_answer: no answer; e.g. no_answer: t.csv row 0 "
        "(answer ''; fields: question, A, B, C, D, answer)); point eval.mcq.s.answer at the answer column (now "
        "'answer'); or raise eval.mcq.s.max_skipped_fraction (now 0.05)"]
    assert prepare(spec(path=str(path), choices=["A", "B", "C", "D"], max_skipped_fraction=0.1)).problems == []


def test_no_scorable_row_is_refused(tmp_path):
    rows = [{"question": "q", "options": {"A": "x", "B": "y"}, "label": "A"}] * 3  # the answer is in 'label'
    path = jsonl(tmp_path / "t.jsonl", rows)
    assert prepare(spec(path=str(path), choices="options")).problems == [
        f"eval.mcq.s: 3 of 3 rows of {path} cannot be scored (3x no_answer: no answer; e.g. no_answer: t.jsonl "
        "row 0 (answer ''; fields: question, options, label)); point eval.mcq.s.answer at the answer column "
        "(now 'answer')"]


INLINE_DEV = [  # options inside the question text, the answer as 'B.<text>' (some Chinese exams' dev files)
    {"question": "Which vitamin is fat-soluble?\nA. Vitamin C\nB. Vitamin D\nC. Vitamin B1\nD. Vitamin B12",
     "answer": "B.Vitamin D"},
    {"question": "Which is a bone? A、femur B、aorta C、liver D、lung", "answer": "A、femur"},
]


def test_dev_file_in_another_layout(tmp_path):
    test = jsonl(tmp_path / "medqa_test.jsonl", MEDQA)
    dev = jsonl(tmp_path / "medqa_dev.jsonl", INLINE_DEV)
    own = spec(preset="medqa", path=str(test), shots=2, dev={"path": str(dev), "choices": "inline",
                                                               "answer": "answer", "answer_kind": "letter"})
    loaded = load_items(own, dev=True)
    assert [(it.question, it.choices, it.answers) for it in loaded.items] == [
        ("Which vitamin is fat-soluble?", ["Vitamin C", "Vitamin D", "Vitamin B1", "Vitamin B12"], [1]),
        ("Which is a bone?", ["femur", "aorta", "liver", "lung"], [0])]
    prep = prepare(own)
    assert prep.problems == [] and [len(exemplars_for(it, prep.pool, 2)) for it in prep.items] == [2, 2, 2]
    # The set's own layout (options: a mapping) cannot read the dev file: refused, never zero-shot.
    same = spec(preset="medqa", path=str(test), shots=2, dev=str(dev))
    assert prepare(same).problems == [
        f"eval.mcq.s.dev: 2 of 2 rows of {dev} cannot be scored (2x few_choices: fewer than 2 non-empty options; "
        "e.g. few_choices: medqa_dev.jsonl row 0 (answer ''; fields: question, answer)); point "
        "eval.mcq.s.dev.choices at the options (now 'options'): a list of columns or dotted paths, one path to a "
        "mapping {A: text} or a list, inline, or fixed_choices (the dev file's own layout: dev: {path: "
        f"{dev}, question: .., choices: .. (inline when the options are lines of the question), answer: ..}})"]


def test_dev_answer_whose_text_is_another_option_is_skipped(tmp_path):
    dev = jsonl(tmp_path / "dev.jsonl", [{**INLINE_DEV[0], "answer": "B. Vitamin C"}])
    s = spec(preset="medqa", path=str(jsonl(tmp_path / "t.jsonl", MEDQA)), shots=1,
             dev={"path": str(dev), "choices": "inline", "answer": "answer"})
    assert dict(load_items(s, dev=True).skipped) == {"answer_text_mismatch": 1}


def test_no_dev_split_takes_exemplars_from_the_test_file_but_never_the_scored_question(tmp_path):
    path = jsonl(tmp_path / "medqa_test.jsonl", MEDQA)
    for s in (spec(preset="medqa", path=str(path), shots=2), spec(preset="medqa", path=str(path), shots=2,
                                                                     dev=str(path))):
        prep = prepare(s)
        assert prep.problems == []
        shots = {it.question: [e.question for e in exemplars_for(it, prep.pool, 2)] for it in prep.items}
        q = [r["question"] for r in MEDQA]
        assert shots == {q[0]: [q[1], q[2]], q[1]: [q[0], q[2]], q[2]: [q[0], q[1]]}
    assert prepare(spec(preset="medqa", path=str(path), shots=3)).problems == [
        "eval.mcq.s.shots: 3 exemplars asked, but subject 'medqa' has only 2 usable in test "
        f"{path} (the scored question left out) (1 subject(s) short); lower shots or give a larger dev split"]


def test_dev_without_the_test_subjects_is_refused(tmp_path):
    row, header = [["q", "yes", "no", "A"]], ["question", "A", "B", "answer"]
    test = csv_file(tmp_path / "t" / "ethics_test.csv", row, header)
    csv_file(tmp_path / "d" / "ehtics_dev.csv", row, header)
    csv_file(tmp_path / "d" / "law_dev.csv", row, header)
    s = spec(path=str(test.parent), dev=str(tmp_path / "d"), choices=["A", "B"], shots=1)
    assert prepare(s).problems == [
        f"eval.mcq.s.dev: no exemplars for subject(s) ethics (dev has 'ehtics') in {tmp_path / 'd'}; name dev "
        "files like the test files (<subject>_dev.csv) or lower shots to 0"]


def test_sampling_depends_on_content_and_seed_not_on_the_path(tmp_path):
    rows = [{"question": f"question {i}", "options": {"A": "x", "B": f"y{i}"}, "answer_idx": "B"} for i in range(30)]
    a = jsonl(tmp_path / "one" / "bench_test.jsonl", rows)
    b = jsonl(tmp_path / "elsewhere" / "copy" / "bench_test.jsonl", rows[::-1])  # same file, rows reversed
    c = jsonl(tmp_path / "renamed.jsonl", rows[10:] + rows[:10])
    picked = [{it.question for it in sample_per_subject(load_items(spec(preset="medqa", path=str(p))).items, 5,
                                                         seed=0)} for p in (a, b, c)]
    assert len(picked[0]) == 5 and picked[0] == picked[1] == picked[2]
    other = {it.question for it in sample_per_subject(load_items(spec(preset="medqa", path=str(a))).items, 5, seed=1)}
    assert other != picked[0]


def test_icl_shots_apply_to_mcq_sets_that_set_none():
    raw = {"name": "m", "preset": "mmlu", "subjects": ["anatomy"]}
    assert [m.shots for m in EvalConfig.model_validate({"icl_shots": 3, "mcq": [raw]}).mcq_sets()] == [3]
    assert [m.shots for m in EvalConfig.model_validate({"icl_shots": 3, "mcq": [{**raw, "shots": 0}]}).mcq_sets()] == [0]
    both = EvalConfig.model_validate({"icl_shots": 3, "mcq_shots": 1, "mcq": [{**raw, "shots": 0}]})
    assert [m.shots for m in both.mcq_sets()] == [1]


def test_input_problems_cover_mcq_and_perplexity(tmp_path):
    ppl = jsonl(tmp_path / "qa.jsonl", [{"q": "Say hi", "a": "hi"}])
    cfg = EvalConfig.model_validate({"perplexity": [str(ppl)], "mcq": [
        {"name": "multi", "path": str(csv_file(tmp_path / "m.csv", MULTI, ["question", "A", "B", "C", "D",
                                                                            "answer"])),
         "choices": ["A", "B", "C", "D"], "multi": True}]})
    assert input_problems(cfg) == [
        f"eval.perplexity.qa: 1 of 1 rows of {ppl} cannot be scored (1x unrecognised row; e.g. row 0: "
        "unrecognised row with fields ['a', 'q'] (fields: a, q)); map its columns with eval.perplexity.qa.fields "
        "(as data.fields: {instruction: <prompt column>, output: <answer column>})"]
    fixed = cfg.model_copy(update={"perplexity": [cfg.perplexity[0].model_copy(
        update={"fields": {"instruction": "q", "output": "a"}})]})
    assert input_problems(fixed) == []


def test_per_set_settings_are_search_space_entries_by_set_name(tmp_path):
    from harness.config import ConfigError, SweepConfig, load_sweep
    from harness.space import grid_points, resolve

    sets = f"eval.mcq=[{{name: medqa, preset: medqa, path: {jsonl(tmp_path / 'm.jsonl', MEDQA)}}}]"
    space = "search.space={eval.mcq.medqa.shots: {grid: [0, 2]}, eval.mcq.medqa.template: {grid: [raw, chat]}}"
    cfg, _ = load_sweep("sweeps/smoke.yaml", [sets, space, "search.algorithm=grid", "search.num_samples=1",
                                              "scheduler.type=fifo"])
    trials = [SweepConfig.model_validate(resolve(cfg.model_dump(mode="json"), p, cfg.search.space))
              for p in grid_points(cfg.search)]
    assert sorted((t.eval.mcq_sets()[0].shots, t.eval.mcq_sets()[0].template) for t in trials) == [
        (0, "chat"), (0, "raw"), (2, "chat"), (2, "raw")]
    assert load_sweep("sweeps/smoke.yaml", [sets, "eval.mcq.medqa.shots=1"])[0].eval.mcq[0].shots == 1
    for overrides, line in [
        (["search.space={eval.mcq.medqb.shots: {choice: [0, 2]}}"],
         "search.space.eval.mcq.medqb.shots: no such setting; did you mean 'eval.mcq.medqa.shots'?"),
        (["search.space={eval.mcq.medqa.shots: {choice: [0, 99]}}"],
         "search.space.eval.mcq.medqa.shots: value 99 is invalid: eval.mcq.medqa.shots: Input should be less than "
         "or equal to 25 (got 99)"),
        (["eval.mcq.medqa.shots=-1"], "eval.mcq.medqa.shots: Input should be greater than or equal to 0 (got -1)"),
        (["eval.mcq.other.shots=1"], "eval.mcq.other: no entry named 'other' in eval.mcq (names: medqa)"),
    ]:
        with pytest.raises(ConfigError) as e:
            load_sweep("sweeps/smoke.yaml", [sets, "scheduler.type=fifo", *overrides])
        assert e.value.problems == [line]


def test_perplexity_entries_are_addressed_by_name():
    from harness.config import load_sweep

    cfg, _ = load_sweep("sweeps/smoke.yaml", ["eval.perplexity=[eval/evol_instruct_gt.json]",
                                              "eval.perplexity.evol_instruct_gt.limit=3"])
    assert [(p.name, p.limit) for p in cfg.eval.perplexity] == [("evol_instruct_gt", 3)]


def test_the_driver_refuses_an_unscorable_set_before_any_trial(tmp_path, capsys):
    from harness.sweep import main

    path = csv_file(tmp_path / "cpa_multi.csv", MULTI, ["question", "A", "B", "C", "D", "answer"])
    grid = "search.space={eval.mcq.cpa.shots: {grid: [0, 5]}}"  # 5 shots: more than the file can give
    args = ["sweeps/smoke.yaml", f"output.dir={tmp_path / 'runs'}", "scheduler.type=fifo", "search.algorithm=grid",
            f"eval.mcq=[{{name: cpa, path: {path}, choices: [A, B, C, D], multi: true}}]", grid, "--dry-run"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: eval.mcq.cpa.shots: 5 exemplars asked, but subject 'cpa_multi' has only 3 usable in test {path} "
        "(the scored question left out) (1 subject(s) short); lower shots or give a larger dev split"]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("question, options", [
    ("Q?\nA. x\nB. y", ["x", "y"]),
    ("Q?\n(A) x\n(B) y\n(C) z", ["x", "y", "z"]),
    ("Q? A) x B) y", ["x", "y"]),
    ("Q?\nA、x\nB、y", ["x", "y"]),
    ("Q? (A).x (B).y", ["x", "y"]),
])
def test_options_inside_the_question_text(question, options):
    from trainables.evaluate.mcq_parse import split_inline

    assert split_inline(question) == ("Q?", list(zip("ABC", options, strict=False)))


@pytest.mark.parametrize("answer, expected", [
    ("B", [1]), ("(B)", [1]), ("B.Vitamin D", [1]), ("(B) Vitamin D", [1]), ("b", [1]),
    ("B. Vitamin C", "answer_text_mismatch"), ("Blue", "answer_not_a_choice"), ("A B", "multi_answer"),
])
def test_decorated_letter_answers(answer, expected):
    from trainables.evaluate.mcq_parse import Skip, answer_indices

    try:
        got = answer_indices(answer, list("ABCD"), ["Vitamin C", "Vitamin D", "x", "y"], "letter", None, False)
    except Skip as e:
        got = e.args[0]
    assert got == expected


def test_a_perplexity_file_in_another_layout_is_decontaminated_against_as_it_is_scored(tmp_path):
    from harness.config import SweepConfig
    from trainables.data.hygiene import eval_prompt_texts

    qa = jsonl(tmp_path / "qa.jsonl", [{"q": "Name a colour.", "a": "Blue"}])
    cfg = SweepConfig.model_validate({"name": "t", "eval": {"perplexity": [
        {"path": str(qa), "fields": {"instruction": "q", "output": "a"}}]}})
    assert str(qa) in cfg.data.decontaminate
    assert cfg.data.decontaminate_fields == {str(qa): {"instruction": "q", "output": "a"}}
    assert eval_prompt_texts(cfg.data.decontaminate, cfg.data.decontaminate_fields) == ["Name a colour."]
