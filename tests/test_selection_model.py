"""Model-based difficulty (loss, IFD) on a handful of real examples at max length 64, checked against
the model's own loss; the cache makes a second pass free and resumes a partial one."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.data import difficulty
from trainables.data.formats import load_examples
from trainables.data.pipeline import prepare
from trainables.data.selection import select
from trainables.schema.data import CurriculumConfig, DataConfig, SelectionConfig

MAX_LEN = 64


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(difficulty, "cache_dir", lambda *parts: tmp_path)
    return tmp_path


def hf_loss(model, tok, messages):
    """The model's own mean loss on the final response: HF shifts the labels itself."""
    import torch

    prefix = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(messages, tokenize=False)
    p = tok(prefix, add_special_tokens=False)["input_ids"]
    r = tok(full[len(prefix):], add_special_tokens=False)["input_ids"][: MAX_LEN - len(p)]
    ids = torch.tensor([p + r])
    labels = torch.tensor([[-100] * len(p) + r])
    with torch.no_grad():
        return float(model(input_ids=ids, labels=labels).loss)


def short_examples(n=5):
    pool = load_examples("alpaca/filtered_alpaca_1k_score.json")[:40]
    return sorted(pool, key=lambda e: len(e.text))[:n]


@pytest.mark.slow
def test_loss_and_ifd_match_the_models_own_loss(model_tok, cache):
    model, tok = model_tok
    examples = short_examples()
    model.train()
    scores = difficulty.score_examples(examples, model, tok, max_len=MAX_LEN, batch_size=3, progress=False)
    assert model.training  # scoring ran in eval mode and restored the caller's mode
    model.eval()
    for e, s in zip(examples, scores, strict=True):
        loss = hf_loss(model, tok, e.messages)
        alone = hf_loss(model, tok, [{"role": "user", "content": ""}, e.messages[-1]])
        assert s["loss"] == pytest.approx(loss, rel=1e-3, abs=1e-4)
        assert s["loss_alone"] == pytest.approx(alone, rel=1e-3, abs=1e-4)
        assert s["ifd"] == pytest.approx(loss / alone, rel=1e-3) and s["ppl"] == pytest.approx(math.exp(loss), rel=1e-3)


def test_cache_resumes_and_prompt_too_long_is_nan(model_tok, cache, monkeypatch):
    model, tok = model_tok
    examples = short_examples(4)
    first = difficulty.score_examples(examples[:2], model, tok, max_len=MAX_LEN, progress=False)
    calls = []
    real = difficulty._losses
    monkeypatch.setattr(difficulty, "_losses", lambda m, pad, seqs: calls.append(len(seqs)) or real(m, pad, seqs))
    again = difficulty.score_examples(examples, model, tok, max_len=MAX_LEN, progress=False)
    assert again[:2] == first and calls == [2, 2]  # only the 2 new examples, with and without instruction
    assert difficulty.score_examples(examples, model, tok, max_len=MAX_LEN, progress=False) == again
    assert calls == [2, 2]
    long_prompt = load_examples("alpaca/filtered_alpaca_1k_longest.json")[0]
    [s] = difficulty.score_examples([long_prompt], model, tok, max_len=16, progress=False)
    assert math.isnan(s["ifd"])


def test_ifd_and_loss_strategies_rank_by_the_scores(model_tok, cache):
    model, tok = model_tok
    examples = short_examples(6)
    difficulty.attach_scores(examples, model, tok, max_len=MAX_LEN, progress=False)
    by_loss = select(examples, SelectionConfig(strategy="loss", n=3), 0)
    assert [e.meta["loss"] for e in by_loss] == sorted((e.meta["loss"] for e in examples), reverse=True)[:3]
    kept = sorted((e.meta["ifd"] for e in examples if e.meta["ifd"] < 1), reverse=True)
    by_ifd = select(examples, SelectionConfig(strategy="ifd", n=None), 0)
    assert [e.meta["ifd"] for e in by_ifd] == kept


@pytest.mark.slow
def test_prepare_scores_for_selection_and_curriculum(model_tok, cache, tmp_path):
    import json

    model, tok = model_tok
    rows = [{"instruction": e.prompt_text, "output": e.response_text} for e in short_examples(12)]
    (tmp_path / "pool.json").write_text(json.dumps(rows))
    data = DataConfig(train=str(tmp_path / "pool.json"), eval_size=2)
    with pytest.raises(ValueError, match="model= and tokenizer="):
        prepare(data, SelectionConfig(strategy="ifd", n=3), 0, lambda e: 1)
    sel = SelectionConfig(strategy="ifd", n=3, score_pool=6, score_max_len=MAX_LEN)
    p = prepare(data, sel, 0, lambda e: 1, model=model, tokenizer=tok, progress=False)
    assert len(p.train) <= 3 and all("ifd" in e.meta for e in p.train) and "mean_ifd" in p.stats
    cur = CurriculumConfig(order="easy_to_hard", metric="loss")
    p = prepare(data, SelectionConfig(strategy="random", n=4), 0, lambda e: 1, curriculum=cur, model=model,
                tokenizer=tok, max_len=MAX_LEN, progress=False)
    assert all("loss" in e.meta for e in p.train)


def test_driver_prescores_every_searched_model_based_level(model_tok, cache):
    # A strategy grid whose base level is random: the driver must still score the IFD level once, so
    # trials find the cache ready instead of each scoring the same examples.
    from harness.config import SweepConfig
    from harness.sweep import needs_model, prescore

    model, tok = model_tok
    cfg = SweepConfig.model_validate({
        "name": "t", "data": {"train": "alpaca/alpaca_en_demo.json", "eval_size": 2},
        "selection": {"strategy": "random", "n": 3, "score_pool": 5, "score_max_len": MAX_LEN},
        "train": {"max_seq_len": MAX_LEN},
        "search": {"algorithm": "grid", "space": {"selection.strategy": {"grid": ["random", "ifd"]}}},
    })
    assert needs_model(cfg)
    assert prescore(cfg, tok, model) == 1  # only the ifd level needs the model
    lines = [line for f in cache.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert len(lines) == 5  # the fixed scoring sample, scored once
    assert prescore(cfg, tok, model) == 1 and len(
        [line for f in cache.glob("*.jsonl") for line in f.read_text().splitlines()]) == 5  # cached: no rescoring


@pytest.mark.slow
def test_a_padded_batch_scores_each_sequence_as_alone(model_tok):
    # Right padding and logits only at response positions must not change any sequence's loss.
    model, tok = model_tok
    model.eval()
    seqs = []
    for e in short_examples(4):
        c_ids, c_at, a_ids, a_at = difficulty._sequences(tok, e, MAX_LEN)
        seqs += [(c_ids, c_at), (a_ids, a_at)]
    assert len({len(ids) for ids, _ in seqs}) > 1  # different lengths: the batch is padded
    with torch.no_grad():
        batched = difficulty._losses(model, tok.pad_token_id, seqs)
        alone = [difficulty._losses(model, tok.pad_token_id, [s])[0] for s in seqs]
    assert len(set(batched)) == len(seqs)
    assert batched == pytest.approx(alone, rel=1e-4, abs=1e-5)
