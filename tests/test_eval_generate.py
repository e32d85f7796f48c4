"""Generation: left-padded batches give the same greedy text as one prompt at a time; seeded sampling
repeats; pred.json / generations.jsonl land in the trial dir; prompt sets of every shape load."""

from __future__ import annotations

import json

import pytest

from trainables.evaluate import EvalInputError, input_problems, run_all
from trainables.evaluate.generate import answer_text, decoding_kwargs, generate_rows
from trainables.evaluate.prompts import load_prompts
from trainables.schema.eval import EvalConfig, GenerateConfig


@pytest.mark.parametrize("path, n, has_ref", [
    ("eval/evol_instruct_gt.json", 150, True),
    ("eval/test_set_evol_instruct_150.json", 150, False),
    ("eval/koala_test_set.jsonl", 180, False),
    ("eval/vicuna_question.jsonl", 80, False),
    ("eval/vicuna_test_set.jsonl", 80, False),
    ("eval/wizardlm_test_set.jsonl", 218, False),
    ("eval/sinstruct_test_set.jsonl", 252, True),
    ("eval/lima_test.jsonl", 300, False),
    ("classical_zh/private_test.json", 250, False),
    ("classical_zh/public_test.json", 250, True),
])
def test_prompt_sets_load(path, n, has_ref):
    rows = load_prompts(path)
    assert len(rows) == n
    assert all(r.messages[-1]["role"] == "user" and r.messages[-1]["content"].strip() for r in rows)
    assert (rows[0].reference is not None) == has_ref
    assert not rows[0].messages[0]["content"].startswith("Below is an instruction")  # preamble stripped


def test_decoding_kwargs_greedy_vs_sampling():
    assert decoding_kwargs(GenerateConfig(temperature=0))["do_sample"] is False
    assert "temperature" not in decoding_kwargs(GenerateConfig(temperature=0))
    kw = decoding_kwargs(GenerateConfig(temperature=0.7, top_k=5, top_p=0.9, num_beams=2, repetition_penalty=1.2))
    assert kw == {"max_new_tokens": 128, "num_beams": 2, "repetition_penalty": 1.2, "do_sample": True,
                  "temperature": 0.7, "top_k": 5, "top_p": 0.9}


@pytest.mark.slow
def test_left_padded_batch_equals_one_at_a_time(model_tok):
    model, tok = model_tok
    rows = load_prompts("eval/vicuna_question.jsonl", limit=3)  # different prompt lengths -> padding
    batched = generate_rows(model, tok, rows, GenerateConfig(max_new_tokens=8, batch_size=3))
    single = generate_rows(model, tok, rows, GenerateConfig(max_new_tokens=8, batch_size=1))
    assert [r["output"] for r in batched] == [r["output"] for r in single]
    assert all(r["output"] and 0 < r["new_tokens"] <= 8 for r in batched)


def test_an_answer_cut_inside_a_character_drops_the_half_character(tokenizer):
    tok = tokenizer
    text = "為今之計，當其大者"
    ids = tok.encode(text, add_special_tokens=False)
    cuts = [k for k in range(1, len(ids)) if tok.decode(ids[:k]).endswith("\ufffd")]
    assert cuts, "the tokenizer spells some character over several tokens"
    for k in cuts:
        got = answer_text(tok, ids[:k])
        assert "\ufffd" not in got and text.startswith(got), (k, got)
    assert answer_text(tok, ids) == text


@pytest.mark.slow
def test_seeded_sampling_repeats_and_files_are_written(model_tok, tmp_path):
    model, tok = model_tok
    gen = {"data": "eval/evol_instruct_gt.json", "limit": 2, "max_new_tokens": 6, "temperature": 1.0,
           "top_k": 20, "top_p": 0.95, "repetition_penalty": 1.1, "seed": 3}
    cfg = EvalConfig(generate=gen)
    m1 = run_all(cfg, model, tok, tmp_path / "a")
    run_all(cfg, model, tok, tmp_path / "b")
    pred_a = json.loads((tmp_path / "a" / "pred.json").read_text())
    pred_b = json.loads((tmp_path / "b" / "pred.json").read_text())
    assert pred_a == pred_b
    assert list(pred_a) == ["identity_8174", "identity_16675"]
    assert set(pred_a["identity_8174"]) == {"input", "output"}
    assert pred_a["identity_8174"]["input"][-1]["role"] == "user"
    lines = (tmp_path / "a" / "generations.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    assert row["reference"] and row["decoding"]["temperature"] == 1.0
    assert m1["gen_n"] == 2 and set(m1) == set(cfg.metrics())


def test_in_context_examples_reach_the_prompt(model_tok):
    from trainables.data.formats import load_examples
    from trainables.evaluate.common import icl_messages
    from trainables.evaluate.generate import build_messages

    pool = load_examples("alpaca/alpaca_en_demo.json")[:10]
    row = load_prompts("eval/vicuna_question.jsonl", limit=1)[0]
    msgs = build_messages(row, icl_messages(pool, 3, seed=0), system="Be brief.")
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert msgs[-1] == row.messages[-1]


@pytest.mark.slow
def test_two_turn_questions_are_answered_turn_by_turn(model_tok, tmp_path):
    """MT-bench's question.jsonl: the second turn is answered with the model's own first answer in context."""
    model, tok = model_tok
    data = tmp_path / "question.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [
        {"question_id": 81, "category": "writing", "turns": ["Name a fruit.", "Now name a colour."]},
        {"question_id": 82, "category": "writing", "turns": ["Say hello."]},
    ]))
    rows = load_prompts(str(data))
    assert [r.turns for r in rows] == [2, 1] and rows[0].later_turns == ["Now name a colour."]
    g = GenerateConfig(max_new_tokens=6, batch_size=2)
    gens = generate_rows(model, tok, rows, g)
    two = gens[0]
    assert two["turns"] == ["Name a fruit.", "Now name a colour."] and len(two["outputs"]) == 2
    assert two["output"] == two["outputs"][0] and "turns" not in gens[1]
    # the same second answer as generating from the conversation written out by hand
    by_hand = load_prompts(str(data))[0]
    by_hand.messages = [{"role": "user", "content": "Name a fruit."},
                        {"role": "assistant", "content": two["outputs"][0]},
                        {"role": "user", "content": "Now name a colour."}]
    by_hand.later_turns = []
    assert generate_rows(model, tok, [by_hand], GenerateConfig(max_new_tokens=6, batch_size=1))[0]["output"] == \
        two["outputs"][1]
    cfg = EvalConfig(generate={"data": str(data), "max_new_tokens": 6})
    m = run_all(cfg, model, tok, tmp_path / "trial")
    assert m["gen_n"] == 2 and m["gen_answers"] == 3 and m["gen_n_skipped"] == 0
    pred = json.loads((tmp_path / "trial" / "pred.json").read_text())
    assert [x["role"] for x in pred["81"]["input"]] == ["user", "assistant", "user"]
    assert pred["81"]["input"][1]["content"] == json.loads(
        (tmp_path / "trial" / "generations.jsonl").read_text().splitlines()[0])["outputs"][0]


def test_turns_past_the_context_are_counted_and_fail_the_trial(model_tok, tmp_path):
    model, tok = model_tok
    cfg = EvalConfig(generate={"data": "eval/vicuna_question.jsonl", "limit": 2, "max_new_tokens": 8192})
    with pytest.raises(EvalInputError) as e:  # 8192 new tokens leave no room for any prompt in 8192 positions
        run_all(cfg, model, tok, tmp_path)
    assert str(e.value) == (
        "eval.generate: 0 of 2 turns answered (2 too long); the conversation and eval.generate.max_new_tokens (8192) "
        "exceed the model's context (8192 tokens): lower max_new_tokens or eval.icl_shots")
    rows = [json.loads(x) for x in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert [r["unanswered_turns"] for r in rows] == [1, 1]


def test_an_unreadable_prompt_row_names_the_field_file_and_row(tmp_path):
    bad = tmp_path / "qs.jsonl"
    bad.write_text('{"id": 1, "prompt": "fine"}\n{"id": 2, "body": "no prompt here"}\n')
    with pytest.raises(ValueError) as e:
        load_prompts(str(bad))
    assert str(e.value) == ("eval.generate.data: row 2 of qs.jsonl: fields ['body', 'id'] fit no prompt layout (read: "
                            "prompt/text/question/query/input, instruction (+input/output), conversations or "
                            "messages, or MT-bench's turns)")
    assert input_problems(EvalConfig(generate={"data": str(bad)})) == [str(e.value)]
