"""Judge prompts and their inputs, checked before anything runs: MT-bench's JSONL of named prompts, the
system prompt, placeholders for each mode (aliases mapped, unknown ones refused), references kept in
another file keyed by id, and questions of two turns (MT-bench question.jsonl). Pure: no model, no server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config import ConfigError, load_sweep
from trainables.evaluate import EvalInputError, check_inputs, input_problems, run_all
from trainables.evaluate.judge import make_items, plan_requests
from trainables.evaluate.judge_prompts import PAIR_SCORES, RATING, SYSTEM, VERDICT
from trainables.schema.eval import EvalConfig, JudgeConfig

# MT-bench's judge_prompts.jsonl layout (texts shortened, placeholders and formats as published).
MT_SYSTEM_PAIR = ("Please act as an impartial judge ... output your final verdict by strictly following this format: "
                  '"[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.')
MT_PROMPTS = [
    {"name": "pair-v2", "type": "pairwise", "system_prompt": MT_SYSTEM_PAIR,
     "prompt_template": "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n"
                        "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n"
                        "[The End of Assistant B's Answer]",
     "description": "Prompt for general questions", "category": "general", "output_format": "[[A]]"},
    {"name": "single-v1", "type": "single", "system_prompt": "You are a helpful assistant.",
     "prompt_template": "[Instruction]\nPlease act as an impartial judge ... rate the response on a scale of 1 to 10 "
                        "by strictly following this format: \"[[rating]]\", for example: \"Rating: [[5]]\".\n\n"
                        "[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n"
                        "[The End of Assistant's Answer]",
     "description": "Prompt for general questions", "category": "general", "output_format": "[[rating]]"},
    {"name": "single-v1-multi-turn", "type": "single", "system_prompt": "Please act as an impartial judge ... "
     "focus on the assistant's answer to the second user question.",
     "prompt_template": "<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{question_1}\n\n"
                        "### Assistant A:\n{answer_1}\n\n### User:\n{question_2}\n\n### Assistant A:\n{answer_2}\n\n"
                        "<|The End of Assistant A's Conversation with User|>",
     "description": "Prompt for general questions", "category": "general", "output_format": "[[rating]]"},
    {"name": "single-math-v1", "type": "single", "system_prompt": "You are a helpful assistant.",
     "prompt_template": "[Question]\n{question}\n\n[The Start of Reference Answer]\n{ref_answer_1}\n"
                        "[The End of Reference Answer]\n\n[The Start of Assistant's Answer]\n{answer}\n"
                        "[The End of Assistant's Answer]",
     "description": "Prompt for math questions", "category": "math", "output_format": "[[rating]]"},
    {"name": "single-math-v1-multi-turn", "type": "single", "system_prompt": "Please act as an impartial judge ...",
     "prompt_template": "<|The Start of Reference Answer|>\n\n### User:\n{question_1}\n\n### Reference answer:\n"
                        "{ref_answer_1}\n\n### User:\n{question_2}\n\n### Reference answer:\n{ref_answer_2}\n\n"
                        "<|The End of Reference Answer|>\n\n\n<|The Start of Assistant A's Conversation with User|>"
                        "\n\n### User:\n{question_1}\n\n### Assistant A:\n{answer_1}\n\n### User:\n{question_2}"
                        "\n\n### Assistant A:\n{answer_2}\n\n<|The End of Assistant A's Conversation with User|>",
     "description": "Prompt for math questions", "category": "math", "output_format": "[[rating]]"},
]
# MT-bench question.jsonl (two turns) and reference_answer/gpt-4.jsonl (question_id, choices[0].turns).
QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["Write a haiku about rain.", "Now make it rhyme."]},
    {"question_id": 111, "category": "math", "turns": ["What is 2+3?", "And times 4?"]},
]
REFERENCES = [{"question_id": 111, "answer_id": "x", "model_id": "gpt-4",
               "choices": [{"index": 0, "turns": ["5", "20"]}], "tstamp": 0}]


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def files(tmp_path):
    return {"prompts": write_jsonl(tmp_path / "judge_prompts.jsonl", MT_PROMPTS),
            "questions": write_jsonl(tmp_path / "question.jsonl", QUESTIONS),
            "refs": write_jsonl(tmp_path / "gpt-4.jsonl", REFERENCES)}


def problems(*overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_sweep("sweeps/decoding.yaml", list(overrides))
    return e.value.problems


def judge(**kw) -> JudgeConfig:
    return JudgeConfig.model_validate({"enabled": True, "base_url": "http://127.0.0.1:1/v1", **kw})


# ----------------------------------------------------------------------------- named prompts


def test_a_jsonl_of_prompts_without_a_name_lists_the_names(files):
    assert problems(f"eval.judge.template={files['prompts']}") == [
        "eval.judge.prompt: judge_prompts.jsonl holds 5 named judge prompts; choose one with eval.judge.prompt: "
        "pair-v2, single-v1, single-v1-multi-turn, single-math-v1, single-math-v1-multi-turn"]
    assert problems(f"eval.judge.template={files['prompts']}", "eval.judge.prompt=single-v2") == [
        "eval.judge.prompt: 'single-v2' is not in judge_prompts.jsonl; choose one of: pair-v2, single-v1, "
        "single-v1-multi-turn, single-math-v1, single-math-v1-multi-turn"]


def test_the_named_prompt_alone_is_sent_with_its_system_prompt(files):
    j = judge(template=files["prompts"], prompt="single-v1")
    assert j.mode == "single" and j.prompts().kind == RATING  # the mode follows the prompt's type
    rows = [{"id": "q1", "input": [{"role": "user", "content": "Why is the sky blue?"}], "output": "Rayleigh."}]
    ps = j.prompts()
    (_, order, messages), = plan_requests(ps, make_items(ps, rows), swap=True)
    assert order == "single"
    assert messages[0] == {"role": "system", "content": "You are a helpful assistant."}
    user = messages[1]["content"]
    assert user.startswith("[Instruction]\nPlease act as an impartial judge")
    assert "[Question]\nWhy is the sky blue?\n\n[The Start of Assistant's Answer]\nRayleigh.\n" in user
    assert "pair-v2" not in user and "prompt_template" not in user  # not the whole file


def test_a_pairwise_verdict_prompt_asks_for_a_and_b(files):
    j = judge(template=files["prompts"], prompt="pair-v2")
    assert j.mode == "pairwise" and j.prompts().kind == VERDICT
    rows = [{"id": "q1", "input": [{"role": "user", "content": "Q?"}], "output": "MODEL", "reference": "REF"}]
    ps = j.prompts()
    plan = plan_requests(ps, make_items(ps, rows), swap=True)
    assert [o for _, o, _ in plan] == ["ref_first", "model_first"]
    first, second = (m[1]["content"] for _, _, m in plan)
    assert "Assistant A's Answer]\nREF\n" in first and "Assistant B's Answer]\nMODEL\n" in first
    assert "Assistant A's Answer]\nMODEL\n" in second and "Assistant B's Answer]\nREF\n" in second
    assert plan[0][2][0]["content"] == MT_SYSTEM_PAIR


def test_a_prompt_of_the_other_type_is_refused(files):
    assert problems(f"eval.judge.template={files['prompts']}", "eval.judge.prompt=pair-v2",
                    "eval.judge.mode=single") == [
        "eval.judge.prompt: prompt 'pair-v2' is a pairwise prompt but eval.judge.mode is single; set "
        "eval.judge.mode: pairwise or choose a single prompt"]


def test_a_plain_template_keeps_the_system_prompt_and_system_overrides_it(tmp_path):
    tpl = tmp_path / "tpl.txt"
    tpl.write_text("Q: {question}\nA: {answer}\nRate it: [[rating]]")
    rows = [{"id": "1", "input": [{"role": "user", "content": "q"}], "output": "a"}]
    for system, expected in ((None, SYSTEM), ("Grade strictly.", "Grade strictly.")):
        ps = judge(template=str(tpl), mode="single", system=system).prompts()
        (_, _, messages), = plan_requests(ps, make_items(ps, rows), swap=False)
        assert messages == [{"role": "system", "content": expected}, {"role": "user",
                                                                        "content": "Q: q\nA: a\nRate it: [[rating]]"}]
    ps = judge(template=str(tpl), mode="single", system="").prompts()
    assert plan_requests(ps, make_items(ps, rows), swap=False)[0][2] == [
        {"role": "user", "content": "Q: q\nA: a\nRate it: [[rating]]"}]


# ----------------------------------------------------------------------------- placeholders


def test_unknown_placeholders_are_refused_with_what_the_mode_supplies(tmp_path):
    tpl = tmp_path / "t.txt"
    tpl.write_text("{question} {answer_a} {answer_b} {rubric}")
    assert problems(f"eval.judge.template={tpl}") == [
        "eval.judge.template: t.txt: placeholder {rubric} is not supplied in pairwise mode; available: {question}, "
        "{answer_a}, {answer_b}, {reference}, {history_a}, {history_b}; per turn N: {question_N}, {answer_a_N}, "
        "{answer_b_N}, {ref_answer_N}"]
    tpl.write_text("{question} {answer_a}")
    assert problems(f"eval.judge.template={tpl}") == [
        "eval.judge.template: t.txt: a pairwise judge template must show {answer_b} (available: "
        "{question}, {answer_a}, {answer_b}, {reference}, {history_a}, {history_b}; per turn N: {question_N}, "
        "{answer_a_N}, {answer_b_N}, {ref_answer_N})"]


def test_common_aliases_are_filled(tmp_path):
    tpl = tmp_path / "alpaca_eval.txt"  # AlpacaEval's names and the reference of MT-bench's math prompts
    tpl.write_text("I: {instruction}\nR: {ref_answer_1}\n1: {output_1}\n2: {output_2}\nOld: {answer_1}|{answer_2}")
    ps = judge(template=str(tpl)).prompts()
    rows = [{"id": "1", "input": [{"role": "user", "content": "q"}], "output": "M", "reference": "R"}]
    text = plan_requests(ps, make_items(ps, rows), swap=False)[0][2][1]["content"]
    assert text == "I: q\nR: R\n1: R\n2: M\nOld: R|M" and ps.kind == PAIR_SCORES


# ----------------------------------------------------------------------------- references by id, turns


def decoding(files, *extra: str) -> list[str]:
    cfg, _ = load_sweep("sweeps/decoding.yaml", [f"eval.generate.data={files['questions']}", "eval.generate.limit=null",
                                                 *extra])
    return input_problems(cfg.eval)


def test_references_by_id_are_checked_before_generation(files, tmp_path):
    # single-v1 for every question, MT-bench's math prompt where a reference exists: all judgeable
    assert decoding(files, f"eval.judge.template={files['prompts']}", "eval.judge.prompt=single-v1",
                    "eval.judge.mode=single", "eval.judge.reference_prompt=single-math-v1", f"eval.judge.references={files['refs']}") == []
    # pairwise needs a reference for every turn: question 81 has none in gpt-4.jsonl
    assert decoding(files, f"eval.judge.references={files['refs']}") == [
        f"eval.judge.references: 2 of 4 judged turns have no reference in {files['refs']} (first: 81, 81 turn 2) "
        "but pairwise mode compares each answer with its reference; add them, give eval.judge.references, or set "
        "eval.judge.mode: single"]
    other = write_jsonl(tmp_path / "other.jsonl", [{"question_id": 7, "choices": [{"turns": ["x", "y"]}]}])
    assert decoding(files, f"eval.judge.references={other}") == [
        f"eval.judge.references: none of the 2 question ids of {files['questions']} (e.g. '81') is in {other} "
        "(e.g. '7'); the references are matched to the questions by id"]
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"question_id": 81, "verdict": "good"}])
    assert decoding(files, f"eval.judge.references={odd}") == [
        "eval.judge.references: row 1 of odd.jsonl: no reference answer in fields ['question_id', 'verdict']; "
        "expected MT-bench's choices[0].turns, a reference/references/ref_answer/answer/output/response/completion "
        "text or list, or a prompt row with its answer (instruction/output, conversations, messages)"]


def test_a_second_turn_needs_a_prompt_that_shows_the_conversation(files, tmp_path):
    only_first = write_jsonl(tmp_path / "p.jsonl", [p for p in MT_PROMPTS if p["name"] != "single-v1-multi-turn"])
    assert decoding(files, f"eval.judge.template={only_first}", "eval.judge.prompt=single-v1", "eval.judge.mode=single") == [
        "eval.judge.prompt: question '81' has 2 turns but prompt 'single-v1' shows no earlier turns ({history}, or "
        "{question_1} ... as MT-bench's *-multi-turn prompts); use a prompt that shows the conversation (MT-bench's "
        "'<name>-multi-turn', or the built-in one without eval.judge.template)"]
    assert decoding(files, f"eval.judge.template={files['prompts']}", "eval.judge.prompt=single-v1",
                    "eval.judge.mode=single") == []


def test_each_turn_is_judged_with_its_prompt(files):
    ps = judge(template=files["prompts"], prompt="single-v1").prompts()
    rows = [{"id": "81", "input": [{"role": "user", "content": "Write a haiku about rain."}], "output": "H1",
             "turns": ["Write a haiku about rain.", "Now make it rhyme."], "outputs": ["H1", "H2"]}]
    items = make_items(ps, rows)
    assert [(it.turn, it.prompt.name, it.skip) for it in items] == [(1, "single-v1", None),
                                                                    (2, "single-v1-multi-turn", None)]
    plan = plan_requests(ps, items, swap=True)
    assert "[Question]\nWrite a haiku about rain.\n\n[The Start of Assistant's Answer]\nH1\n" in plan[0][2][1]["content"]
    assert plan[1][2][1]["content"] == (
        "<|The Start of Assistant A's Conversation with User|>\n\n### User:\nWrite a haiku about rain.\n\n"
        "### Assistant A:\nH1\n\n### User:\nNow make it rhyme.\n\n### Assistant A:\nH2\n\n"
        "<|The End of Assistant A's Conversation with User|>")
    assert plan[1][2][0]["content"].endswith("answer to the second user question.")


def test_a_data_error_fails_before_any_work_and_a_judging_failure_is_not_redone(files, tmp_path, monkeypatch):
    import trainables.evaluate as ev

    cfg = EvalConfig.model_validate({"generate": {"data": files["questions"]},
                                     "judge": {"enabled": True, "base_url": "http://127.0.0.1:1/v1",
                                               "references": files["refs"]}})
    with pytest.raises(EvalInputError, match="^eval.judge.references: 2 of 4 judged turns have no reference"):
        run_all(cfg, model=None, tokenizer=None, trial_dir=tmp_path)  # before the (absent) model is touched
    # A judging failure is left in the trial dir: a retry in the same driver run fails at once, another
    # driver run (--resume --retry-errored) tries again.
    monkeypatch.setattr(ev, "_driver_run", lambda: "session_1/01000000")
    (tmp_path / ev.FAILED).write_text("session_1/01000000\neval.judge: 0 of 4 judged answers scored (4 failed)")
    ok = EvalConfig.model_validate({"generate": {"data": files["questions"]}})
    with pytest.raises(EvalInputError, match=r"^eval.judge: 0 of 4 judged answers scored \(4 failed\)$"):
        check_inputs(ok, tmp_path)
    monkeypatch.setattr(ev, "_driver_run", lambda: "session_2/01000000")
    check_inputs(ok, tmp_path)
    assert not (tmp_path / ev.FAILED).exists()


@pytest.mark.slow
def test_the_driver_refuses_missing_references_before_any_trial(files):
    from helpers import run_sweep

    proc = run_sweep("sweeps/decoding.yaml", f"eval.generate.data={files['questions']}",
                     f"eval.judge.references={files['refs']}", "--dry-run", timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: eval.judge.references: 2 of 4 judged turns have no reference in {files['refs']} (first: 81, 81 turn "
        "2) but pairwise mode compares each answer with its reference; add them, give eval.judge.references, or set "
        "eval.judge.mode: single"]


def test_fill_is_one_pass_and_keeps_other_braces():
    from trainables.evaluate.judge_prompts import fill

    out = fill('Q={question} A={answer} json={"k": 1}', "single", {"question": "{answer}", "answer": "x"})
    assert out == 'Q={answer} A=x json={"k": 1}'
