"""Perplexity of reference answers equals a direct transformers computation on the same rows."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.data.formats import load_examples
from trainables.evaluate import run_all
from trainables.evaluate.config import EvalConfig
from trainables.evaluate.perplexity import score_examples

FILES = ["classical_zh/public_test.json", "eval/evol_instruct_gt.json"]


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
