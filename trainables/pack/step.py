"""One optimizer step, and the held-out loss, for every member of a pack with ONE forward/backward through
the base per round.

Round j of a step puts micro-batch j of every member that still has one (members differ in batch size and
gradient accumulation) into one batch whose rows each belong to one member (the rows never see each other,
so a member's gradients come from its own rows only and its NaN stays in them). Padded micro-batches
(train.packing off) keep their rows and attention masks, right-padded to the round's longest row. Packed
ones (train.packing: examples in a row, position ids restarting per example) are cut into their examples
and refilled, per member, into rows as long as the round's longest example (first fit, longest first),
so members with more or longer examples do not pad the others' rows; the padding at a row's end gets
position ids starting again at 0, i.e. one more "example" that no real token attends to. This relies on
transformers building the per-example mask from each row's position ids (sdpa / eager attention, as
`packing_isolates` checks for the single trial). Either way each example's logits are what they are alone.

The normalisation is train_step's: member i's loss is its summed response-token loss over the step divided
by its own n_labels (response tokens of the whole step), so a packed member's gradients equal the ones it
gets alone. After the rounds, per member: clip its own weights, step its optimizer and schedule, zero grads.
There is no fp16 GradScaler here: one scale for all members would skip every member's step when one
overflows (packs train in fp32 or bf16).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F

from trainables.batching import Batch, Encoded, collate, label_logits, pack
from trainables.data.tokenize import IGNORE
from trainables.pack.multilora import PackedLora


def _next_labels(b: Batch) -> torch.Tensor:
    """(rows, width): the label position p predicts (token p + 1), IGNORE where none (the last column too)."""
    ids = b.inputs["input_ids"]
    out = torch.full_like(ids, IGNORE)
    out[:, b.keep] = b.targets
    return out


def _examples(b: Batch) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """A packed micro-batch's examples: (input ids, next-token labels, position ids) of each."""
    labels, out = _next_labels(b), []
    for row in range(b.inputs["input_ids"].shape[0]):
        pos = b.inputs["position_ids"][row]
        starts = (pos == 0).nonzero().flatten().tolist() + [pos.shape[0]]  # position ids restart per example
        out += [(b.inputs["input_ids"][row, s:e], labels[row, s:e], pos[s:e]) for s, e in itertools.pairwise(starts)]
    return out


def _packed_rows(examples: list[tuple[torch.Tensor, ...]], width: int) -> list[list[tuple[torch.Tensor, ...]]]:
    """The examples in rows of at most `width` positions: first fit, longest first."""
    rows: list[list[tuple[torch.Tensor, ...]]] = []
    room: list[int] = []
    for ex in sorted(examples, key=lambda e: -e[0].shape[0]):
        n = ex[0].shape[0]
        i = next((i for i, free in enumerate(room) if free >= n), len(rows))
        if i == len(rows):
            rows.append([])
            room.append(width)
        rows[i].append(ex)
        room[i] -= n
    return rows


def _row(parts: list[torch.Tensor], width: int, value: int | None) -> torch.Tensor:
    """One row of `width`: the parts, then padding (`value`; None: position ids starting again at 0)."""
    row = torch.cat(parts)
    pad = width - row.shape[0]
    fill = torch.arange(pad, device=row.device) if value is None else row.new_full((pad,), value)
    return torch.cat([row, fill])


def concat_rows(parts: dict[str, Batch]) -> tuple[Batch, list[tuple[str, int]]]:
    """The members' micro-batches as one batch (module docstring), and how many of its rows, in order,
    are each member's."""
    layouts = {"position_ids" in b.inputs for b in parts.values()}
    if len(layouts) > 1:
        raise ValueError("train.packing: a pack's members must all pack sequences or all pad them; "
                         "pack configurations with different train.packing separately")
    ids, labels, extra, counts = (_packed_layout if layouts.pop() else _padded_layout)(parts)
    width = ids.shape[1]
    nxt = labels[:, : width - 1]
    keep = (nxt != IGNORE).any(0).nonzero().flatten()
    batch = Batch({"input_ids": ids, **extra}, keep, nxt[:, keep].contiguous(),
                  sum(b.n_labels for b in parts.values()), sum(b.n_tokens for b in parts.values()), ids.numel())
    return batch, counts


def _packed_layout(parts: dict[str, Batch]) -> tuple[torch.Tensor, torch.Tensor, dict, list[tuple[str, int]]]:
    """Packed micro-batches: each member's examples refilled into rows as long as the round's longest example."""
    examples = {m: _examples(b) for m, b in parts.items()}
    width = max(ex[0].shape[0] for exs in examples.values() for ex in exs)
    filled = {m: _packed_rows(exs, width) for m, exs in examples.items()}
    rows = [row for m in parts for row in filled[m]]
    ids = torch.stack([_row([ex[0] for ex in row], width, 0) for row in rows])  # padding: never attended to
    labels = torch.stack([_row([ex[1] for ex in row], width, IGNORE) for row in rows])
    extra = {"position_ids": torch.stack([_row([ex[2] for ex in row], width, None) for row in rows])}
    return ids, labels, extra, [(m, len(filled[m])) for m in parts]


def _padded_layout(parts: dict[str, Batch]) -> tuple[torch.Tensor, torch.Tensor, dict, list[tuple[str, int]]]:
    """Padded micro-batches: the members' rows, right-padded to the round's longest row."""
    width = max(b.inputs["input_ids"].shape[1] for b in parts.values())
    pads = {m: (0, width - b.inputs["input_ids"].shape[1]) for m, b in parts.items()}
    ids = torch.cat([F.pad(b.inputs["input_ids"], pads[m], value=0) for m, b in parts.items()])
    labels = torch.cat([F.pad(_next_labels(b), pads[m], value=IGNORE) for m, b in parts.items()])
    extra = {"attention_mask": torch.cat([F.pad(b.inputs["attention_mask"], pads[m], value=0)
                                          for m, b in parts.items()])}
    return ids, labels, extra, [(m, b.inputs["input_ids"].shape[0]) for m, b in parts.items()]


def _member_sums(model: Any, batch: Batch, rows: list[tuple[str, int]], autocast: Callable[[], Any],
                 ) -> dict[str, torch.Tensor]:
    """One forward of the round's batch through the base (inside its `routed`): each member's summed token
    loss, from the logits at its own rows' response positions only (batching.label_logits)."""
    wanted = batch.targets != IGNORE
    losses = F.cross_entropy(label_logits(model, batch, autocast), batch.targets[wanted], reduction="none")
    row_member = torch.repeat_interleave(torch.arange(len(rows), device=losses.device),
                                         torch.tensor([n for _, n in rows], device=losses.device))
    per_member = losses.new_zeros(len(rows)).index_add(0, row_member.unsqueeze(1).expand_as(wanted)[wanted], losses)
    return {member: per_member[i] for i, (member, _) in enumerate(rows)}


def _passes(parts: dict[str, Batch], members_per_pass: int | None) -> list[dict[str, Batch]]:
    """A round's micro-batches in groups of `members_per_pass` members (None: all in one pass)."""
    members = list(parts)
    size = members_per_pass or len(members)
    return [{m: parts[m] for m in members[i : i + size]} for i in range(0, len(members), size)]


def packed_train_step(packed: PackedLora, model: Any, steps: dict[str, list[Batch]], autocast: Callable[[], Any],
                      optimizers: dict[str, Any], schedulers: dict[str, Any], max_grad_norm: dict[str, float] | float,
                      n_labels: dict[str, int], members_per_pass: int | None = None) -> dict[str, torch.Tensor]:
    """One optimizer step for every member in `steps` (member -> its micro-batches of this step), one
    forward/backward through the base per round (module docstring), or per `members_per_pass` members of a
    round: the members' losses are independent, so splitting a round changes no gradient, only how many
    rows' activations are held at once. Returns each member's summed token loss of the step as a device
    tensor, as train_step does (reading it is a host sync)."""
    empty = [m for m, batches in steps.items() if not batches]
    if empty:
        raise ValueError(f"packed_train_step: no micro-batch for {', '.join(empty)} in this step")
    device = next(iter(steps.values()))[0].targets.device
    totals = {m: torch.zeros((), device=device) for m in steps}
    model.train()  # as loaded, or as a member's report left it, the model is in eval mode: no dropout, no checkpointing
    for j in range(max(len(batches) for batches in steps.values())):
        round_j = {m: batches[j] for m, batches in steps.items() if j < len(batches)}
        for parts in _passes(round_j, members_per_pass):
            batch, rows = concat_rows(parts)
            with packed.routed(rows):  # the backward too: gradient checkpointing recomputes the forward in it
                sums = _member_sums(model, batch, rows, autocast)
                sum(loss / max(n_labels[m], 1) for m, loss in sums.items()).backward()
            for m, loss in sums.items():
                totals[m] += loss.detach()
    for m in steps:
        norm = max_grad_norm[m] if isinstance(max_grad_norm, dict) else max_grad_norm
        torch.nn.utils.clip_grad_norm_(packed.parameters_of(m), norm)
        optimizers[m].step()
        schedulers[m].step()
        optimizers[m].zero_grad(set_to_none=True)
    return totals


@torch.no_grad()
def packed_mean_loss(packed: PackedLora, model: Any, evals: dict[str, list[Encoded]], batch_size: dict[str, int] | int,
                     pad_id: int, device: str, autocast: Callable[[], Any], packed_rows: bool = False,
                     ) -> dict[str, float]:
    """Each member's mean token loss over its held-out rows (mean_loss's chunks: sorted by length, batch_size
    rows each, padded or packed as `packed_rows`), one forward per round for the whole pack."""
    model.eval()
    chunks: dict[str, list[Batch]] = {}
    for m, data in evals.items():
        size = batch_size[m] if isinstance(batch_size, dict) else batch_size
        ordered = sorted(data, key=lambda e: len(e[0]))  # as mean_loss: similar lengths together
        chunks[m] = [pack(ordered[i : i + size], device=device) if packed_rows
                     else collate(ordered[i : i + size], pad_id, device) for i in range(0, len(ordered), size)]
    totals = {m: torch.zeros((), device=device) for m in evals}
    counts = {m: sum(b.n_labels for b in batches) for m, batches in chunks.items()}
    for j in range(max((len(c) for c in chunks.values()), default=0)):
        batch, rows = concat_rows({m: c[j] for m, c in chunks.items() if j < len(c)})
        with packed.routed(rows):
            sums = _member_sums(model, batch, rows, autocast)
        for m, loss in sums.items():
            totals[m] += loss
    model.train()
    return {m: float(totals[m]) / max(counts[m], 1) for m in evals}
