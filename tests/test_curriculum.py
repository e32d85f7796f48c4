"""Curricula order the selected examples as promised, reproducibly, and never lose one."""

from __future__ import annotations

import pytest

from trainables.data.curriculum import CURRICULA
from trainables.data.formats import load_examples
from trainables.schema.data import CurriculumConfig


@pytest.fixture(scope="module")
def examples():
    return load_examples("alpaca/filtered_alpaca_1k_longest.json")[:30]  # scored 3.0-4.5, many ties


def plan(order, examples, epochs=3, seed=0, lengths=None, **kw):
    cfg = CurriculumConfig(order=order, **kw)
    lengths = lengths if lengths is not None else [len(e.text) for e in examples]
    return CURRICULA.get(order)(examples, cfg, epochs, seed, lengths)


def test_none_shuffles_each_epoch_reproducibly(examples):
    p = plan("none", examples)
    assert all(sorted(epoch) == list(range(30)) for epoch in p) and p[0] != p[1]
    assert p == plan("none", examples) and p != plan("none", examples, seed=1)


@pytest.mark.parametrize("metric", ["length", "score"])
def test_easy_to_hard_and_back(examples, metric):
    value = [len(e.text) for e in examples] if metric == "length" else [-e.score for e in examples]
    up = plan("easy_to_hard", examples, metric=metric)
    down = plan("hard_to_easy", examples, metric=metric)
    for epoch in up:
        assert sorted(epoch) == list(range(30))
        assert [value[i] for i in epoch] == sorted(value)
    for epoch in down:
        assert [value[i] for i in epoch] == sorted(value, reverse=True)
    assert up == plan("easy_to_hard", examples, metric=metric)


def test_loss_metric_reads_meta_and_asks_for_the_model(examples):
    with pytest.raises(ValueError, match="model=model"):
        plan("easy_to_hard", examples, metric="ifd")
    scored = [type(e)(e.id, e.messages, e.score, e.source, e.category, {"ifd": (i * 7) % 30 / 30})
              for i, e in enumerate(examples)]
    epoch = plan("easy_to_hard", scored, metric="ifd")[0]
    assert [scored[i].meta["ifd"] for i in epoch] == sorted(e.meta["ifd"] for e in scored)


def test_staged_levels_by_quantile(examples):
    lengths = list(range(100, 130))  # index i has difficulty i: the levels are index ranges
    cum = plan("staged", examples, epochs=3, lengths=lengths, stages=3, cumulative=True)
    assert [sorted(e) for e in cum] == [list(range(10)), list(range(20)), list(range(30))]
    dis = plan("staged", examples, epochs=3, lengths=lengths, stages=3, cumulative=False)
    assert [sorted(e) for e in dis] == [list(range(10)), list(range(10, 20)), list(range(20, 30))]
    # 2 epochs per stage, then the epochs left over train on everything
    long = plan("staged", examples, epochs=7, lengths=lengths, stages=3, epochs_per_stage=2, cumulative=False)
    assert [sorted(e) for e in long] == [list(range(10))] * 2 + [list(range(10, 20))] * 2 + \
        [list(range(20, 30))] * 2 + [list(range(30))]
    assert long == plan("staged", examples, epochs=7, lengths=lengths, stages=3, epochs_per_stage=2,
                        cumulative=False)
    # fewer epochs than stages: stages share an epoch, in order, and nothing is dropped
    one = plan("staged", examples, epochs=1, lengths=lengths, stages=3, cumulative=False)
    assert len(one) == 1 and [i // 10 for i in one[0]] == sorted(i // 10 for i in one[0])
    assert sorted(one[0]) == list(range(30))
    with pytest.raises(ValueError, match="epochs_per_stage"):
        plan("staged", examples, epochs=3, lengths=lengths, stages=3, epochs_per_stage=2)


def test_every_curriculum_keeps_the_selected_set(examples):
    for order in CURRICULA.names():
        p = plan(order, examples, epochs=3)
        assert set().union(*map(set, p)) == set(range(30)), order
