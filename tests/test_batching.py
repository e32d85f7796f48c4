"""Batches without padding waste: length grouping keeps every example exactly once and the curriculum's
order at its window's grain; packing never lets an example see another (logits equal the unpacked ones
on the real model); the speed switches (gradient checkpointing, compile) train the same loss."""

from __future__ import annotations

import contextlib
import random

import pytest
import torch

from trainables.batching import (
    collate,
    group_by_length,
    kept_logits,
    label_logits,
    micro_batches,
    pack,
    packing_isolates,
    padding_fraction,
    token_loss_sum,
)
from trainables.data.formats import load_examples
from trainables.data.tokenize import IGNORE, encode
from trainables.models import load_model
from trainables.training import order_batches, train_step

NO_AUTOCAST = contextlib.nullcontext


@pytest.fixture(scope="module")
def encoded(tokenizer):
    return [encode(tokenizer, e.messages, 128) for e in load_examples("alpaca/random_9k.json")[:8]]


@pytest.fixture(scope="module")
def model():
    return load_model("smollm2-135m-instruct")[0].eval()


def shuffled_plan(n: int, epochs: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [rng.sample(range(n), n) for _ in range(epochs)]


def test_length_grouping_keeps_every_example_once_per_epoch_and_follows_the_seed():
    rng = random.Random(1)
    lengths = [rng.randint(20, 400) for _ in range(103)]  # an uneven last micro-batch and window
    plan = shuffled_plan(103, epochs=3)
    grouped = group_by_length(plan, lengths, batch_size=4, group_size=8)
    per_epoch = len(micro_batches([plan[0]], 4))
    assert len(grouped) == 3 * per_epoch
    for e in range(3):
        epoch = grouped[e * per_epoch : (e + 1) * per_epoch]
        assert sorted(i for mb in epoch for i in mb) == list(range(103))  # each example exactly once
    assert grouped == group_by_length(plan, lengths, 4, 8)  # reproducible: the seeded plan decides
    assert grouped != group_by_length(shuffled_plan(103, epochs=3, seed=1), lengths, 4, 8)
    plain = micro_batches(plan, 4)
    assert padding_fraction(grouped, lengths) < padding_fraction(plain, lengths) / 2
    assert group_by_length(plan, lengths, 4, 1) == plain  # group_size 1 = off


def test_length_grouping_keeps_a_curriculum_order_at_the_window_grain():
    rng = random.Random(2)
    lengths = [rng.randint(20, 400) for _ in range(64)]
    by_length = sorted(range(64), key=lambda i: lengths[i])
    # an easy-to-hard-by-length curriculum is left exactly as it was
    assert group_by_length([by_length], lengths, 4, 16) == micro_batches([by_length], 4)
    # any other curriculum: nobody leaves its window of group_size x batch_size examples
    curriculum = list(range(64))  # e.g. easy to hard by loss
    grouped = group_by_length([curriculum], lengths, 4, 2)
    flat = [i for mb in grouped for i in mb]
    assert all(p // 8 == curriculum.index(i) // 8 for p, i in enumerate(flat))
    # the trainable picks the small window under a curriculum and none when packed
    assert order_batches([curriculum], lengths, 4, packed=False, group=True, group_size=None,
                         curriculum="easy_to_hard") == grouped
    assert order_batches([curriculum], lengths, 4, packed=True, group=True, group_size=None,
                         curriculum="none") == micro_batches([curriculum], 4)


def test_pack_restarts_positions_and_never_predicts_across_a_boundary(encoded):
    rows = encoded[:3]
    packed, padded = pack(rows), collate(rows, pad_id=0)
    ids, pos = packed.inputs["input_ids"][0], packed.inputs["position_ids"][0]
    assert "attention_mask" not in packed.inputs  # that is what makes transformers use the position ids
    assert ids.tolist() == [t for x, _ in rows for t in x]
    assert pos.tolist() == [p for x, _ in rows for p in range(len(x))]
    assert packed.n_tokens == packed.n_positions == sum(len(x) for x, _ in rows) < padded.n_positions
    # the same response tokens are learned, none of them at an example's first position
    labels = sorted(t for t in packed.targets.flatten().tolist() if t != IGNORE)
    assert labels == sorted(t for t in padded.targets.flatten().tolist() if t != IGNORE)
    assert packed.n_labels == padded.n_labels == len(labels)
    starts = torch.nonzero(pos == 0).flatten()
    assert not set((starts - 1).tolist()) & set(packed.keep.tolist())  # last token of one -> first of the next


@pytest.mark.slow
def test_packed_logits_equal_unpacked_ones(model, encoded):
    rows = encoded[:3]
    with torch.no_grad():
        alone = [model(input_ids=torch.tensor([x]), use_cache=False).logits[0] for x, _ in rows]
        together = model(**pack(rows).inputs, use_cache=False).logits[0]
        torch.testing.assert_close(together, torch.cat(alone), atol=2e-4, rtol=1e-4)
        summed = [token_loss_sum(model, b, NO_AUTOCAST) for b in (pack(rows), collate(rows, 0))]
    assert float(summed[0]) == pytest.approx(float(summed[1]), rel=1e-5)
    assert packing_isolates(model, "cpu", NO_AUTOCAST)


class WithoutLogitsToKeep(torch.nn.Module):
    """A real model behind a forward that does not take logits_to_keep (an older or custom model)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, **kwargs):
        return self.inner(**kwargs)

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()


def test_label_logits_are_each_rows_own_response_positions(model, encoded):
    """Rows of different prompt and answer lengths: logits_to_keep computes every row at the union of
    their response positions; label_logits only at each row's own, with or without logits_to_keep."""
    batch = collate(encoded[:4], 0)
    wanted = batch.targets != IGNORE
    assert int(wanted.sum()) < wanted.numel()  # the union is more than each row's own
    with torch.no_grad():
        union = kept_logits(model, batch, NO_AUTOCAST)
        for m in (model, WithoutLogitsToKeep(model)):
            torch.testing.assert_close(label_logits(m, batch, NO_AUTOCAST), union[wanted], atol=2e-4, rtol=1e-4)
        assert not model.get_output_embeddings()._forward_pre_hooks  # the hook is gone after the call


class IgnoresPositions(torch.nn.Module):
    """A real model whose caller drops the position ids: packed examples then attend to each other."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, position_ids=None, **kwargs):
        return self.inner(**kwargs)


@pytest.mark.slow
def test_packing_check_catches_a_model_that_mixes_examples(model):
    assert not packing_isolates(IgnoresPositions(model), "cpu", NO_AUTOCAST)


@pytest.mark.slow
def test_a_worker_checks_each_model_once(model):
    from trainables.training import packs_apart

    class Counting(IgnoresPositions):
        calls = 0

        def forward(self, position_ids=None, **kwargs):
            Counting.calls += 1
            return super().forward(position_ids, **kwargs)

    mixing = Counting(model)
    key = ("test-mixing-model", "none", "cpu", False)
    assert not packs_apart(mixing, key, "cpu", NO_AUTOCAST)
    checked = Counting.calls
    assert checked == 3  # two examples alone, then packed
    assert not packs_apart(mixing, key, "cpu", NO_AUTOCAST)  # the same answer, not checked again
    assert Counting.calls == checked
    assert packs_apart(model, (*key[:3], True), "cpu", NO_AUTOCAST)  # another key: checked


@pytest.fixture(scope="module")
def lora_factory():
    from peft import LoraConfig, get_peft_model

    def make(checkpointing: bool = False):
        # The real model cut to its first 2 of 30 layers: the same modules and code paths, and
        # torch.compile traces 15x less graph (minutes less on 2 CPU cores).
        base = load_model("smollm2-135m-instruct")[0]
        base.model.layers = base.model.layers[:2]
        base.config.num_hidden_layers = 2
        if checkpointing:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        torch.manual_seed(0)
        m = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
        params = [p for p in m.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-3)
        return m.train(), params, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    return make


def two_steps(model, params, opt, sched, batches) -> list[float]:
    return [float(train_step(model, [b], NO_AUTOCAST, opt, sched, params, 1.0)) / b.n_labels for b in batches]


@pytest.mark.slow
def test_gradient_checkpointing_trains_the_same_loss(lora_factory, encoded):
    batches = [pack(encoded[:2]), pack(encoded[2:4])]
    plain = two_steps(*lora_factory(), batches)
    checkpointed = two_steps(*lora_factory(checkpointing=True), batches)
    assert plain[1] < plain[0] + 1.0 and all(map(torch.isfinite, torch.tensor(plain)))
    assert checkpointed == pytest.approx(plain, rel=1e-4)  # recomputed activations, same numbers


@pytest.mark.slow
def test_compiled_model_trains_the_same_loss(lora_factory, encoded):
    batches = [pack(encoded[:2]), pack(encoded[2:4])]
    plain = two_steps(*lora_factory(), batches)
    model, params, opt, sched = lora_factory()
    compiled = two_steps(torch.compile(model, dynamic=True), params, opt, sched, batches)
    assert compiled == pytest.approx(plain, rel=1e-3)


@pytest.mark.slow
def test_loss_scaling_takes_the_same_step_and_skips_an_overflow(lora_factory, encoded):
    # fp16 autocast (GPUs without bf16) trains with a GradScaler; on finite gradients the scaled step is
    # the unscaled one, and a step whose gradients overflow is skipped with the scale lowered.
    batches = [pack(encoded[:2]), pack(encoded[2:4])]
    plain = two_steps(*lora_factory(), batches)
    model, params, opt, sched = lora_factory()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaled = [float(train_step(model, [b], NO_AUTOCAST, opt, sched, params, 1.0, scaler=scaler)) / b.n_labels
              for b in batches]
    assert scaled == pytest.approx(plain, rel=1e-4)
    before = [p.detach().clone() for p in params]
    huge = torch.amp.GradScaler("cpu", init_scale=1e38)  # scaled fp32 gradients overflow to inf
    train_step(model, [batches[0]], NO_AUTOCAST, opt, sched, params, 1.0, scaler=huge)
    assert all(torch.equal(a, p) for a, p in zip(before, params, strict=True))  # the step was skipped
    assert huge.get_scale() < 1e38
