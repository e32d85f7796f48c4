"""data.prompt_template: a raw instruction template replaces the chat template everywhere a conversation
is rendered, on the real SmolLM2 tokenizer (masking boundary, training == perplexity == generation)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from trainables.data.prompt_template import check_template, template_tag, use_prompt_template
from trainables.data.tokenize import IGNORE, encode, last_turn, prompt_ids
from trainables.evaluate.perplexity import encode_scored
from trainables.schema.data import DataConfig

ALPACA = ("Below is an instruction that describes a task, paired with an input that provides further context. "
          "Write a response that appropriately completes the request.\n\n"
          "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
CLASSICAL = ("你是人工智慧助理，以下是用戶和人工智能助理之間的對話。你要對用戶的問題提供有用、安全、詳細和禮貌的回答。"
             "USER: {instruction} ASSISTANT:")


@pytest.fixture
def tok():
    """A fresh tokenizer: the template is installed on it, so the session's shared one stays untouched."""
    from transformers import AutoTokenizer

    from trainables.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))


def _split(tok, ids, labels):
    cut = next(i for i, lab in enumerate(labels) if lab != IGNORE)
    assert all(lab != IGNORE for lab in labels[cut:])
    return tok.decode(ids[:cut]), tok.decode(ids[cut:])


def test_alpaca_template_masks_exactly_the_prompt(tok):
    use_prompt_template(tok, ALPACA)
    msgs = [{"role": "user", "content": "Add the numbers.\n\n2 and 3"}, {"role": "assistant", "content": "5"}]
    ids, labels = encode(tok, msgs, 10**9)
    prompt, response = _split(tok, ids, labels)
    assert prompt == ALPACA.format(instruction="Add the numbers.", input="2 and 3")
    assert response == "5" + tok.eos_token  # the model learns to stop
    assert "<|im_start|>" not in tok.decode(ids)  # the chat template is gone
    assert tok.decode(prompt_ids(tok, msgs)) == prompt  # generation sees the prompt trained on


def test_no_input_fills_empty_and_classical_prompt(tok):
    use_prompt_template(tok, CLASSICAL)
    row = "沒過十天，鮑泉果然被拘捕。\n幫我把這句話翻譯成文言文"
    msgs = [{"role": "user", "content": row}, {"role": "assistant", "content": "後未旬，果見囚執。"}]
    ids, labels = encode(tok, msgs, 10**9)
    prompt, response = _split(tok, ids, labels)
    assert prompt == CLASSICAL.format(instruction=row)
    assert response == "後未旬，果見囚執。" + tok.eos_token


def test_same_tokens_in_training_and_perplexity(tok):
    use_prompt_template(tok, CLASSICAL)
    msgs = [{"role": "user", "content": "翻譯成文言文：\n雅裏惱怒地說\n答案："}, {"role": "assistant", "content": "雅裏怒曰"}]
    assert encode_scored(tok, msgs, [], 10**9) == encode(tok, msgs, 10**9)
    ctx, resp = last_turn(tok, msgs)
    ids, labels = encode(tok, msgs, 10**9)
    assert ctx + resp == ids and [x for x in labels if x != IGNORE] == resp
    # in-context shots are rendered with the same template and carry no labels
    shot = [{"role": "user", "content": "甲"}, {"role": "assistant", "content": "乙"}]
    s_ids, s_labels = encode_scored(tok, msgs, shot, 10**9)
    assert tok.decode(s_ids).startswith(CLASSICAL.format(instruction="甲") + "乙" + tok.eos_token)
    assert [x for x in s_labels if x != IGNORE] == resp


def test_template_changes_cache_tag(tok):
    assert template_tag(tok) == ""
    use_prompt_template(tok, ALPACA)
    assert template_tag(tok).startswith("+tmpl-")


@pytest.mark.parametrize("bad, word", [("Q: {instrucion}\nA:", "{instrucion}"), ("Q: {input}", "{instruction}"),
                                       ("{instruction!r}", "conversion"), ("{instruction", "braces")])
def test_bad_template_names_the_placeholder(bad, word):
    with pytest.raises(ValueError, match=word.replace("{", r"\{").replace("}", r"\}")):
        check_template(bad)
    with pytest.raises(ValidationError, match="prompt_template"):
        DataConfig(prompt_template=bad)


def test_unknown_placeholder_is_one_line_exit_2(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text('name: bad\nmodel: {name: smollm2-135m-instruct}\n'
                   'data: {train: alpaca/random_9k.json, prompt_template: "Q: {question}\\nA:"}\n')
    r = subprocess.run([sys.executable, "-m", "harness.sweep", str(cfg), "--dry-run"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "data.prompt_template" in lines[0] and "{question}" in lines[0], r.stderr
