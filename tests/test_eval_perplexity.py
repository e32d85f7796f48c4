"""Perplexity of reference answers equals a direct transformers computation on the same rows."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.data.formats import load_examples
from trainables.evaluate import run_all
from trainables.evaluate.perplexity import score_examples
from trainables.schema.eval import EvalConfig

FILES = ["classical_zh/public_test.json", "eval/evol_instruct_gt.json"]


def direct(model, tok, messages) -> tuple[float, int]:
    """Summed NLL of the answer: whole conversation through the chat template, prompt part masked,
    one unpadded sequence, the model's own loss (a mean) times the number of answer tokens."""
    prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(messages, tokenize=False)
    ids = tok(full, add_special_tokens=False, return_tensors="pt")["input_ids"]
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    labels = ids.clone()
    labels[:, :n_prompt] = -100
    with torch.no_grad():
        loss = model(input_ids=ids, labels=labels).loss
    n = int((labels[:, 1:] != -100).sum())
    return float(loss) * n, n


@pytest.mark.parametrize("path", FILES)
@pytest.mark.slow
def test_matches_direct_computation(model_tok, path):
    model, tok = model_tok
    rows = load_examples(path)[:3]
    ours = score_examples(model, tok, rows, batch_size=3, max_len=4096)  # batched + padded
    for row, (nll, n) in zip(rows, ours, strict=True):
        ref_nll, ref_n = direct(model, tok, row.messages)
        assert n == ref_n
        assert nll == pytest.approx(ref_nll, rel=1e-4, abs=1e-3)


def test_run_all_reports_token_weighted_loss_and_ppl(model_tok, tmp_path):
    model, tok = model_tok
    cfg = EvalConfig(perplexity=FILES, perplexity_limit=3, batch_size=2)
    m = run_all(cfg, model, tok, tmp_path)
    for path in FILES:
        rows = load_examples(path)[:3]
        sums = [direct(model, tok, r.messages) for r in rows]
        loss = sum(s for s, _ in sums) / sum(n for _, n in sums)
        stem = path.split("/")[-1].removesuffix(".json")
        assert m[f"loss_{stem}"] == pytest.approx(loss, rel=1e-4)
        assert m[f"ppl_{stem}"] == pytest.approx(math.exp(loss), rel=1e-4)
        assert (tmp_path / f"perplexity_{stem}.jsonl").read_text().count("\n") == 3
    assert set(m) == set(cfg.metrics())


def test_in_context_examples_are_not_scored(model_tok):
    model, tok = model_tok
    rows = load_examples("eval/evol_instruct_gt.json")[:2]
    pool = load_examples("alpaca/alpaca_en_demo.json")[:20]
    from trainables.evaluate.common import icl_messages

    icl = icl_messages(pool, 2, seed=0)
    assert len(icl) == 4 and icl[0]["role"] == "user" and icl[1]["role"] == "assistant"
    plain = score_examples(model, tok, rows, batch_size=2, max_len=4096)
    shots = score_examples(model, tok, rows, batch_size=2, max_len=4096, icl=icl)
    assert [n for _, n in plain] == [n for _, n in shots]  # same answer tokens, only the context grew
    assert [s for s, _ in plain] != [s for s, _ in shots]


def test_other_column_names_with_fields_limit_and_both_perplexities(model_tok, tmp_path):
    import json

    model, tok = model_tok
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"q": f"Name a {k}.", "a": v}) + "\n" for k, v in
                          [("colour", "Blue."), ("fruit", "An apple, usually red."), ("planet", "Mars"),
                           ("number", "Seven")]))
    entry = {"path": str(qa), "name": "qa", "fields": {"instruction": "q", "output": "a"}, "limit": 3}
    m = run_all(EvalConfig.model_validate({"perplexity": [entry]}), model, tok, tmp_path / "t")
    sums = [direct(model, tok, [{"role": "user", "content": f"Name a {k}."}, {"role": "assistant", "content": v}])
            for k, v in [("colour", "Blue."), ("fruit", "An apple, usually red."), ("planet", "Mars")]]
    token_weighted = math.exp(sum(s for s, _ in sums) / sum(n for _, n in sums))
    mean_per_row = sum(math.exp(s / n) for s, n in sums) / 3
    assert m["ppl_qa"] == pytest.approx(token_weighted, rel=1e-4)
    assert m["ppl_mean_qa"] == pytest.approx(mean_per_row, rel=1e-4) and m["ppl_mean_qa"] != m["ppl_qa"]
    assert (m["ppl_qa_n_scored"], m["ppl_qa_n_skipped"]) == (3, 0)
    assert set(m) == set(EvalConfig.model_validate({"perplexity": [entry]}).metrics())


def test_rows_that_cannot_be_scored_are_counted_or_fail_the_trial(model_tok, tmp_path):
    import json

    model, tok = model_tok
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in [{"q": "Say hi.", "a": "hi"}, {"q": "Say no."},
                                                         {"q": "Say yes.", "a": "yes"}, {"q": "Say 1.", "a": "1"}]))
    entry = {"path": str(qa), "fields": {"instruction": "q", "output": "a"}}
    with pytest.raises(ValueError) as e:
        run_all(EvalConfig.model_validate({"perplexity": [entry]}), model, tok, tmp_path / "t")
    assert str(e.value) == (
        f"eval.perplexity.qa: 1 of 4 rows of {qa} cannot be scored (1x missing output; e.g. row 1: missing output "
        "(fields: q)); map its columns with eval.perplexity.qa.fields (as data.fields: {instruction: <prompt "
        "column>, output: <answer column>}), or raise eval.perplexity.qa.max_skipped_fraction (now 0.05)")
    m = run_all(EvalConfig.model_validate({"perplexity": [{**entry, "max_skipped_fraction": 0.25}]}), model, tok,
                tmp_path / "t")
    assert (m["ppl_qa_n_scored"], m["ppl_qa_n_skipped"], m["ppl_qa_skipped_missing_output"]) == (3, 1, 1)
