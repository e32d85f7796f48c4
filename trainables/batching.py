"""Micro-batches without padding waste: the order they come in and the tensors they become.

Order (which examples share a micro-batch):
  micro_batches     cut each epoch's ordered indices into micro-batches (the curriculum's order as is)
  group_by_length   sort by length inside small windows of consecutive micro-batches, so a micro-batch
                    holds similar lengths (less padding); every example still comes exactly once per epoch

Tensors (what one micro-batch becomes):
  collate           right-pad the rows to the micro-batch's own longest sequence
  pack              concatenate the rows into ONE row, position ids restarting at 0 for every example:
                    no padding at all. transformers (>= 4.53) turns restarting position ids into a
                    block-diagonal causal mask (sdpa / eager) or varlen attention (flash attention), so no
                    example attends to another; `packing_isolates` checks that on the actual model.

Both give a `Batch` whose loss needs logits only where a response token is predicted (`keep`), so
the language-model head, the largest single matmul of a small model, skips prompt positions.
Everything here is host-side bookkeeping: counts are Python ints, so the training loop never has to
ask the device for them (no host syncs per step).

Padding waste on Alpaca-like lengths (batch 4, bench/bench_train.py): plain ~35-40% of the
computed positions are padding, length grouping in windows of 16 micro-batches ~5%, packing 0%.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch

from trainables.data.tokenize import IGNORE, Encoded

GROUP_SIZE = 16  # micro-batches per length-sorting window without a curriculum
CURRICULUM_GROUP_SIZE = 2  # with one: an example moves at most 2 x batch_size - 1 places


@dataclass
class Batch:
    """One micro-batch on its device, plus the host-side counts the loop needs."""

    inputs: dict[str, torch.Tensor]  # what the model takes: input_ids + attention_mask | position_ids
    keep: torch.Tensor  # positions whose next token is a response token (logits only there)
    targets: torch.Tensor  # (rows, len(keep)) the next-token labels at those positions, IGNORE elsewhere
    n_labels: int  # response tokens = the loss normaliser
    n_tokens: int  # real (non-padding) tokens
    n_positions: int  # computed positions (rows x width): n_tokens + padding

    def to(self, device: str) -> Batch:
        nb = device == "cuda"  # pinned -> device copies overlap with compute
        return Batch({k: v.to(device, non_blocking=nb) for k, v in self.inputs.items()},
                     self.keep.to(device, non_blocking=nb), self.targets.to(device, non_blocking=nb),
                     self.n_labels, self.n_tokens, self.n_positions)


def _finish(inputs: dict[str, torch.Tensor], labels: torch.Tensor, n_tokens: int, device: str) -> Batch:
    nxt = labels[:, 1:]  # position p predicts token p + 1
    keep = (nxt != IGNORE).any(0).nonzero().flatten()
    batch = Batch(inputs, keep, nxt[:, keep].contiguous(), int((nxt != IGNORE).sum()), n_tokens,
                  labels.numel())
    if device == "cuda":
        batch.inputs = {k: v.pin_memory() for k, v in batch.inputs.items()}
        batch.keep, batch.targets = batch.keep.pin_memory(), batch.targets.pin_memory()
    return batch.to(device)


def collate(batch: list[Encoded], pad_id: int, device: str = "cpu") -> Batch:
    """Right-pad a micro-batch to its own longest sequence (not to max_seq_len)."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (x, y) in enumerate(batch):
        ids[row, : len(x)] = torch.tensor(x)
        labels[row, : len(y)] = torch.tensor(y)
        mask[row, : len(x)] = 1
    return _finish({"input_ids": ids, "attention_mask": mask}, labels, sum(len(x) for x, _ in batch), device)


def pack(batch: list[Encoded], device: str = "cpu") -> Batch:
    """All examples of a micro-batch in one row; positions restart per example; no attention mask
    (that is what tells transformers to build the per-example mask from the position ids).
    The first token of every example is never a label: nothing is predicted across a boundary."""
    ids = torch.tensor([t for x, _ in batch for t in x], dtype=torch.long)[None]
    labels = torch.tensor([IGNORE if i == 0 else t for _, y in batch for i, t in enumerate(y)], dtype=torch.long)[None]
    positions = torch.cat([torch.arange(len(x)) for x, _ in batch])[None]
    return _finish({"input_ids": ids, "position_ids": positions}, labels, ids.numel(), device)


def micro_batches(plan: list[list[int]], batch_size: int) -> list[list[int]]:
    """Cut each epoch's ordered indices into micro-batches, keeping the curriculum's order."""
    out = []
    for epoch in plan:
        out += [epoch[i : i + batch_size] for i in range(0, len(epoch), batch_size)]
    return out


def group_by_length(plan: list[list[int]], lengths: list[int], batch_size: int, group_size: int) -> list[list[int]]:
    """Micro-batches of similar lengths. Each epoch's order is cut into windows of group_size x
    batch_size examples; a window is sorted by length (ties keep their epoch order) and cut into
    micro-batches, which then go in the order of their examples' mean position in the epoch. So an
    example never leaves its window (a curriculum's order survives at the window's grain; a
    length-ordered one is left exactly as it was) and a shuffled epoch stays shuffled. No randomness
    of its own: the epoch order (seeded by the curriculum) decides everything. group_size 1 = off."""
    if group_size <= 1:
        return micro_batches(plan, batch_size)
    out: list[list[int]] = []
    for epoch in plan:
        rank = {idx: pos for pos, idx in enumerate(epoch)}
        span = batch_size * group_size
        for start in range(0, len(epoch), span):
            window = sorted(epoch[start : start + span], key=lambda i: (lengths[i], rank[i]))
            cut = [window[i : i + batch_size] for i in range(0, len(window), batch_size)]
            out += sorted(cut, key=lambda mb: sum(rank[i] for i in mb) / len(mb))
    return out


def padding_fraction(batches: list[list[int]], lengths: list[int]) -> float:
    """Share of computed positions that are padding when each micro-batch is padded to its longest."""
    computed = sum(len(mb) * max(lengths[i] for i in mb) for mb in batches)
    real = sum(lengths[i] for mb in batches for i in mb)
    return 1 - real / max(computed, 1)


def kept_logits(model: Any, batch: Batch, autocast: Any) -> torch.Tensor:
    """Logits only at `batch.keep` (transformers' logits_to_keep, so model-specific scaling /
    soft-capping of the head still applies), as float32 (rows, len(keep), vocab)."""
    with autocast():
        if _takes_logits_to_keep(type(unwrapped_model(model))):
            logits = model(**batch.inputs, use_cache=False, logits_to_keep=batch.keep).logits
        else:  # an older or custom model: full logits, then the same positions
            logits = model(**batch.inputs, use_cache=False).logits[:, batch.keep]
    return logits.float()


def label_logits(model: Any, batch: Batch, autocast: Any) -> torch.Tensor:
    """Logits only at each row's own response positions, as float32 (labels, vocab) in row order, for the
    targets batch.targets[batch.targets != IGNORE]. kept_logits computes every row at the union of the rows'
    positions (logits_to_keep takes one list for all rows); here a forward pre-hook on the output layer
    gathers each row's own hidden states, so what the model does after its head (scaling, soft-capping)
    still applies. For rows of unrelated lengths and prompts (a pack's members) the union is most of the row."""
    takes_keep = _takes_logits_to_keep(type(unwrapped_model(model)))
    mask = batch.targets != IGNORE  # (rows, len(keep)): what the head sees under logits_to_keep
    if not takes_keep:  # the head sees every position: the same mask over the whole row
        mask = torch.zeros_like(batch.inputs["input_ids"], dtype=torch.bool).index_copy(1, batch.keep, mask)

    def gather(_head: Any, args: tuple) -> tuple:
        return (args[0][mask].unsqueeze(0), *args[1:])  # (1, labels, hidden)

    hook = unwrapped_model(model).get_output_embeddings().register_forward_pre_hook(gather)
    try:
        with autocast():
            extra = {"logits_to_keep": batch.keep} if takes_keep else {}
            logits = model(**batch.inputs, use_cache=False, **extra).logits
    finally:
        hook.remove()
    return logits[0].float()


def token_loss_sum(model: Any, batch: Batch, autocast: Any) -> torch.Tensor:
    """Summed cross-entropy over response tokens (the model's own loss is a per-batch mean)."""
    logits = kept_logits(model, batch, autocast)
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), batch.targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )


def token_losses(model: Any, batch: Batch, autocast: Any) -> torch.Tensor:
    """Cross-entropy of every kept position, shaped like batch.targets (0 where the target is IGNORE)."""
    logits = kept_logits(model, batch, autocast)
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), batch.targets.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view_as(batch.targets)


def unwrapped_model(model: Any) -> Any:
    """The transformers model under peft, DistributedDataParallel and torch.compile wrappers."""
    model = getattr(model, "_orig_mod", model)
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@functools.cache
def _takes_logits_to_keep(cls: type) -> bool:
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


@torch.no_grad()
def packing_isolates(model: Any, device: str, autocast: Any, vocab: int = 1000) -> bool:
    """Does this model keep packed examples apart? Logits of two short sequences run packed must
    equal their logits run alone (cross-attention would change the second one's completely)."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randint(10, vocab, (n,), generator=g).tolist() for n in (7, 5))
    alone = []
    for x in (a, b):
        with autocast():
            alone.append(model(input_ids=torch.tensor([x], device=device), use_cache=False).logits[0].float())
    packed = pack([(a, a), (b, b)], device=device)
    with autocast():
        together = model(**packed.inputs, use_cache=False).logits[0].float()
    model.train(was_training)
    expected = torch.cat(alone)
    scale = expected.abs().max().clamp(min=1.0)
    return bool(((together - expected).abs().max() / scale) < 2e-2)
