"""Loading real Alpaca / FastChat files and masking prompt tokens with the model's chat template."""

from __future__ import annotations

import pickle

import pytest

from trainables.data.formats import DataNotFound, load_examples
from trainables.data.pipeline import prepare, split_pool
from trainables.data.tokenize import IGNORE, Tokens, encode, worker_tokens
from trainables.schema.data import DataConfig, SelectionConfig


def test_alpaca_and_fastchat_files_normalise_to_messages(data_file):
    alpaca = load_examples(str(data_file("alpaca/random_9k.json")))
    assert len(alpaca) > 9000
    assert [m["role"] for m in alpaca[0].messages] == ["user", "assistant"]
    fastchat = load_examples("alpaca/filtered_alpaca_1k_longest.json")
    assert len(fastchat) == 1000 and fastchat[0].score is not None
    # The Alpaca preamble inside FastChat human turns is stripped (the chat template frames the turn).
    assert not any("Below is an instruction" in e.messages[0]["content"] for e in fastchat)


def test_missing_data_names_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    with pytest.raises(DataNotFound) as e:
        load_examples("alpaca/nope.json")
    assert "data.train" in str(e.value) and str(tmp_path / "alpaca/nope.json") in str(e.value)


def test_prompt_tokens_are_masked(tokenizer, data_file):
    ex = load_examples("alpaca/random_9k.json")[0]
    ids, labels = encode(tokenizer, ex.messages, 1024)
    assert len(ids) == len(labels)
    learned = tokenizer.decode([t for t in labels if t != IGNORE])
    assert learned.startswith(ex.response_text) and ex.messages[0]["content"] not in learned
    first = next(i for i, t in enumerate(labels) if t != IGNORE)
    # Everything before the response is the templated prompt, ending with the assistant header.
    assert tokenizer.decode(ids[:first]).endswith("<|im_start|>assistant\n")
    assert ids[first:] == labels[first:]
    short, short_labels = encode(tokenizer, ex.messages, 10)
    assert len(short) == 10 and all(t == IGNORE for t in short_labels)


def test_the_sweeps_token_table_serves_every_max_len_and_trials_encode_only_what_it_lacks(tokenizer):
    pool = load_examples("alpaca/alpaca_en_demo.json")[:12]
    driver = Tokens(tokenizer)
    for e in pool[:8]:  # the plan: the base subset
        driver(e, 128)
    assert driver.encoded == 8 and len(driver.table) == 8
    # A trial gets the table (through Ray's object store, pickled): its own copies of the examples
    # (loaded again, other objects, same content) are found by content; any max_len is a cut of the same.
    trial = Tokens(tokenizer, pickle.loads(pickle.dumps(driver.table)))
    again = load_examples("alpaca/alpaca_en_demo.json")[:12]
    for max_len in (32, 128, 1024):
        assert [trial(e, max_len) for e in again] == [encode(tokenizer, e.messages, max_len) for e in pool]
    assert trial.encoded == 4  # only the 4 examples outside the plan's subset, once each
    # A reused worker keeps what its trials encoded: the next trial encodes nothing of the same.
    first = worker_tokens("smollm2-test", tokenizer, driver.table)
    for e in again:
        first(e, 64)
    assert first.encoded == 4
    second = worker_tokens("smollm2-test", tokenizer, driver.table)
    for e in again:
        second(e, 64)
    assert second is first and second.encoded == 0
    assert worker_tokens("other-model", tokenizer, {}).table == {}  # another tokenizer: nothing shared


def test_eval_split_is_fixed_across_trial_seeds_and_disjoint():
    data = DataConfig(train="alpaca/alpaca_en_demo.json", eval_size=20)
    pool, held = split_pool(data)
    a = prepare(data, SelectionConfig(strategy="random", n=30), seed=1, n_tokens=lambda e: 1)
    b = prepare(data, SelectionConfig(strategy="random", n=30), seed=2, n_tokens=lambda e: 1)
    assert [e.id for e in a.eval] == [e.id for e in b.eval] == [e.id for e in held]
    assert {e.id for e in a.train} != {e.id for e in b.train}
    assert not {e.id for e in a.train} & {e.id for e in held}
    assert a.stats["n_examples"] == 30 and a.stats["train_tokens"] == 30
