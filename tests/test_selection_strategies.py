"""Each strategy picks the right examples of a small real sample, checked against an independent
computation here; offsets and token budgets behave the same for every strategy."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from trainables.data.formats import load_examples
from trainables.data.selection import SELECTION, select
from trainables.schema.data import SelectionConfig

N = 12


@pytest.fixture(scope="module")
def pool():
    # Scored FastChat rows of very different lengths, plus unscored raw Alpaca rows.
    return load_examples("alpaca/filtered_alpaca_1k_longest.json")[:40] + \
        load_examples("alpaca/filtered_alpaca_1k_score.json")[:40] + load_examples("alpaca/random_9k.json")[:20]


def ids(examples):
    return [e.id for e in examples]


def top_by(pool, values, n):
    """The chosen set is right when no left-out example beats a chosen one (ties may go either way)."""
    order = sorted(range(len(pool)), key=lambda i: -values[i])
    return order[:n], values[order[n - 1]], values[order[n]]


def assert_top(chosen, pool, value):
    picked = {e.id for e in chosen}
    inside = [value(e) for e in pool if e.id in picked]
    outside = [value(e) for e in pool if e.id not in picked]
    assert len(chosen) == len(picked) == N
    assert min(inside) >= max(outside)


def test_first_and_random(pool):
    assert ids(select(pool, SelectionConfig(strategy="first", n=N), 0)) == ids(pool[:N])
    order = list(range(len(pool)))
    random.Random(7).shuffle(order)
    assert ids(select(pool, SelectionConfig(strategy="random", n=N), 7)) == [pool[i].id for i in order[:N]]
    assert ids(select(pool, SelectionConfig(strategy="random", n=N), 8)) != ids(select(
        pool, SelectionConfig(strategy="random", n=N), 7))


@pytest.mark.parametrize("by", ["response", "conversation"])
def test_longest(pool, by):
    text = (lambda e: e.response_text) if by == "response" else (
        lambda e: "\n".join(m["content"] for m in e.messages))
    chosen = select(pool, SelectionConfig(strategy="longest", n=N, length_by=by, length_unit="chars"), 0)
    assert_top(chosen, pool, lambda e: len(text(e)))
    assert [len(text(e)) for e in chosen] == sorted((len(text(e)) for e in chosen), reverse=True)
    shortest = select(pool, SelectionConfig(strategy="longest", n=N, length_unit="chars", ascending=True), 0)
    assert_top(shortest, pool, lambda e: -len(e.response_text))
    words = select(pool, SelectionConfig(strategy="longest", n=N), 0)  # default unit: words
    # Words = runs of letters/digits (English rows here; CJK counts characters, tested elsewhere).
    assert_top(words, pool, lambda e: len(re.findall(r"[^\W_]+", e.response_text)))


def test_score_top_n_skips_unscored(pool):
    chosen = select(pool, SelectionConfig(strategy="score", n=N), 0)
    assert all(e.score is not None for e in chosen)
    assert_top(chosen, pool, lambda e: -1 if e.score is None else e.score)
    assert len(select(pool, SelectionConfig(strategy="score", n=None), 0)) == 80  # the 20 unscored are left out
    with pytest.raises(ValueError, match="no example in the pool has a score"):
        select(pool[-20:], SelectionConfig(strategy="score", n=N), 0)


@pytest.mark.parametrize("how", ["minmax", "zscore", "rank"])
def test_weighted(pool, how):
    from scipy.stats import rankdata

    lengths = np.array([len(e.response_text) for e in pool], dtype=float)
    raw = np.array([np.nan if e.score is None else e.score for e in pool])
    raw[np.isnan(raw)] = np.nanmean(raw)

    def norm(v):
        if how == "minmax":
            return (v - v.min()) / (v.max() - v.min())
        if how == "zscore":
            return (v - v.mean()) / v.std()
        return (rankdata(v) - 1) / (len(v) - 1)

    value = dict(zip(ids(pool), 0.3 * norm(lengths) + 0.7 * norm(raw), strict=True))
    cfg = SelectionConfig(strategy="weighted", n=N, length_weight=0.3, score_weight=0.7, normalize=how,
                          length_unit="chars")
    assert_top(select(pool, cfg, 0), pool, lambda e: value[e.id])


def test_diversity_is_greedy_k_center(pool):
    from trainables.data.selection.diversity import embed

    x = embed([e.text for e in pool], "tfidf").toarray()  # sentence embeddings: test_selection_diversity.py
    dist = 1 - x @ x.T
    chosen = select(pool, SelectionConfig(strategy="diversity", n=N, embedding="tfidf"), 3)
    at = [ids(pool).index(e.id) for e in chosen]
    assert at[0] == random.Random(3).randrange(len(pool))
    for k in range(1, N):  # every pick is (one of) the farthest from all earlier picks
        spread = dist[:, at[:k]].min(axis=1)
        assert spread[at[k]] == pytest.approx(spread.max(), abs=1e-5)
    assert len(set(at)) == N


def test_offset_and_token_budget_apply_to_every_strategy(pool):
    def n_tokens(e):
        return len(e.text) // 4

    for strategy in ("random", "longest", "score", "weighted", "diversity"):
        cfg = SelectionConfig(strategy=strategy, embedding="tfidf")
        full = ids(select(pool, cfg.model_copy(update={"n": 30}), 1))
        assert ids(select(pool, cfg.model_copy(update={"n": 10, "offset": 5}), 1)) == full[5:15]
        budget = 3000
        chosen = select(pool, cfg.model_copy(update={"n": None, "token_budget": budget}), 1, n_tokens)
        total = sum(n_tokens(e) for e in chosen)
        assert total >= budget and total - n_tokens(chosen[-1]) < budget  # met within one example
        assert ids(chosen) == full[: len(chosen)]


def test_longest_matched_uses_randoms_tokens(pool):
    def n_tokens(e):
        return len(e.text) // 4

    rand = select(pool, SelectionConfig(strategy="random", n=N), 2)
    budget = sum(n_tokens(e) for e in rand)
    chosen = select(pool, SelectionConfig(strategy="longest_matched", n=N), 2, n_tokens)
    total = sum(n_tokens(e) for e in chosen)
    assert total >= budget and total - n_tokens(chosen[-1]) < budget and len(chosen) < N
    longest = select(pool, SelectionConfig(strategy="longest", n=len(chosen)), 2)
    assert ids(chosen) == ids(longest)


def test_registry_and_config_validation():
    assert {"first", "random", "longest", "longest_matched", "score", "weighted", "diversity", "loss", "ifd"} <= set(
        SELECTION.names())
    with pytest.raises(ValueError, match="unknown strategy"):
        SelectionConfig(strategy="longst")
    with pytest.raises(ValueError, match="both 0"):
        SelectionConfig(strategy="weighted", length_weight=0, score_weight=0)


def test_a_strategy_is_a_declared_object_that_select_and_the_driver_read(pool, monkeypatch):
    from trainables.data.selection import Strategy, needs_model, strategy

    monkeypatch.setattr(SELECTION, "_items", dict(SELECTION._items))  # the test's strategy leaves with it

    assert SELECTION.get("loss") == Strategy("loss", SELECTION.get("loss").rank, needs_model=True)
    assert SELECTION.get("longest_matched").budget_of == "random" and not needs_model("longest_matched")
    assert needs_model("ifd") and not needs_model("random")

    @strategy("reversed_for_test", budget_of="first")
    def reversed_order(examples, cfg, seed):
        return reversed(range(len(examples)))

    assert reversed_order is SELECTION.get("reversed_for_test").rank  # the function itself stays callable
    chosen = select(pool, SelectionConfig(strategy="reversed_for_test", n=3), 0, lambda e: 10)
    assert ids(chosen) == ids(pool[::-1][:3])  # the tokens of `first`'s 3 examples, from the end
    with pytest.raises(ValueError, match="registered twice"):
        strategy("reversed_for_test")(reversed_order)
