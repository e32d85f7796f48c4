"""The trial's building blocks on the real model: loss masking, batching, report points, and real
4-bit nf4 QLoRA (bitsandbytes on CPU) learning."""

from __future__ import annotations

import contextlib

import pytest
import torch

from trainables.data.formats import load_examples
from trainables.data.tokenize import IGNORE, encode
from trainables.models import bf16_supported, load_model
from trainables.training import collate, mean_loss, micro_batches, report_steps, token_loss_sum


@pytest.fixture(scope="module")
def examples():
    return load_examples("alpaca/random_9k.json")[:6]


def test_report_points_are_even_and_end_at_the_last_step():
    assert report_steps(75, 12) == {6, 12, 19, 25, 31, 38, 44, 50, 56, 62, 69, 75}
    assert report_steps(3, 12) == {1, 2, 3}  # never more reports than steps
    assert micro_batches([[3, 1, 2], [0, 1, 2]], 2) == [[3, 1], [2], [0, 1], [2]]  # curriculum order kept


@pytest.mark.slow
def test_summed_loss_matches_transformers_own_masked_loss(tokenizer, examples):
    model, _, _ = load_model("smollm2-135m-instruct")
    enc = [encode(tokenizer, e.messages, 128) for e in examples[:3]]
    batch = collate(enc, tokenizer.pad_token_id, "cpu")
    width = max(len(x) for x, _ in enc)
    assert batch.inputs["input_ids"].shape[1] == width  # padded to the longest, not max_len
    labels = torch.tensor([y + [IGNORE] * (width - len(y)) for _, y in enc])
    with torch.no_grad():
        ours = token_loss_sum(model, batch, contextlib.nullcontext) / batch.n_labels
        theirs = model(**batch.inputs, labels=labels).loss  # transformers: mean over shifted labels != -100
        assert float(ours) == pytest.approx(float(theirs), rel=1e-4)
        # mean_loss weights every response token equally across batches of different sizes.
        per_example = [token_loss_sum(model, collate([x], tokenizer.pad_token_id, "cpu"), contextlib.nullcontext)
                       for x in enc]
        tokens = [sum(1 for t in y[1:] if t != IGNORE) for _, y in enc]
    expected = sum(float(v) for v in per_example) / sum(tokens)
    for packed in (False, True):
        assert mean_loss(model, enc, 2, tokenizer.pad_token_id, "cpu", contextlib.nullcontext, packed) == \
            pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
def test_nf4_qlora_trains_on_cpu(tokenizer, examples):
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model, _, _ = load_model("smollm2-135m-instruct", quantization="nf4")
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) >= 200  # real 4-bit weights
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    batch = collate([encode(tokenizer, e.messages, 64) for e in examples[:2]], tokenizer.pad_token_id, "cpu")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)

    def autocast():  # as the trial does: bf16 math only where the CPU has bf16 instructions
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_supported("cpu"))

    losses = []
    for _ in range(3):
        loss = token_loss_sum(model, batch, autocast) / batch.n_labels
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.05, losses  # LoRA on 4-bit weights learns the batch
