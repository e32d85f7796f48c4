"""The training step and its parts: device, precision, micro-batch order, one optimizer step, held-out loss.

The trial (trainables/trial.py) composes these; bench/bench_train.py times `train_step` directly.

Arithmetic (defaults of sweeps/lora_rank.yaml): 100 examples / (batch 4 x accum 1)
= 25 optimizer steps per epoch; x ~107 tokens per example = ~10.7k real tokens per epoch.

Speed (docs/performance.md; each a train.* switch): a micro-batch is packed into one row without
padding (trainables/batching.py), or length-grouped when packing is off; logits only at response
positions; the loop never waits for the device except when it reports; optional torch.compile and
gradient checkpointing.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch

from trainables.batching import (
    CURRICULUM_GROUP_SIZE,
    GROUP_SIZE,
    Batch,
    Encoded,
    collate,
    group_by_length,
    micro_batches,
    pack,
    packing_isolates,
    token_loss_sum,
)

# ----------------------------------------------------------------------------- helpers


def pick_device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def make_autocast(device: str, use_bf16: bool) -> Callable[[], Any]:
    """bf16 autocast where it pays (CUDA; CPUs with AVX-512 BF16 / AMX); fp16 autocast on older GPUs."""
    dtype = torch.bfloat16 if use_bf16 else torch.float16
    enabled = use_bf16 or device == "cuda"
    return lambda: torch.autocast(device_type=device, dtype=dtype, enabled=enabled)


_packing_checked: dict[tuple, bool] = {}


def packs_apart(model: Any, key: tuple, device: str, autocast: Callable[[], Any]) -> bool:
    """packing_isolates, once per `key` (model, quantization, device, precision) in this process: a
    reused worker's later trials skip the check (~0.4 s each on this CPU, measured)."""
    if key not in _packing_checked:
        _packing_checked[key] = packing_isolates(model, device, autocast)
    return _packing_checked[key]


def order_batches(plan: list[list[int]], lengths: list[int], batch_size: int, *, packed: bool, group: bool,
                  group_size: int | None, curriculum: str) -> list[list[int]]:
    """Which examples share each micro-batch. Packed micro-batches have no padding, so they keep the
    curriculum's order exactly; padded ones are length-grouped in windows (small ones under a curriculum)."""
    if packed or not group:
        return micro_batches(plan, batch_size)
    size = group_size or (GROUP_SIZE if curriculum == "none" else CURRICULUM_GROUP_SIZE)
    return group_by_length(plan, lengths, batch_size, size)


def train_step(model: Any, batches: list[Batch], autocast: Callable[[], Any], optimizer: Any, scheduler: Any,
               params: list[torch.Tensor], max_grad_norm: float, n_labels: int | None = None,
               scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """One optimizer step: gradients of the mean response-token loss over the step's micro-batches
    (every token weighs the same, however the tokens fall into micro-batches), clip, step.
    `n_labels`: the response tokens of the whole step when `batches` is one data-parallel worker's
    share of it (default: these batches'). Returns the step's summed token loss as a device tensor:
    reading it is a host sync, so the loop adds it up on the device and reads it only when it reports.
    `scaler`: loss scaling for fp16 autocast (GPUs without bf16, e.g. a T4), so small gradients do not
    underflow; a step with inf/NaN gradients is skipped and the scale lowered."""
    n = max(sum(b.n_labels for b in batches) if n_labels is None else n_labels, 1)  # counted on the host
    total = torch.zeros((), device=batches[0].targets.device)
    for b in batches:
        loss = token_loss_sum(model, b, autocast)
        (scaler.scale(loss / n) if scaler else loss / n).backward()
        total += loss.detach()
    if scaler:
        scaler.unscale_(optimizer)  # clip the true gradients
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total


@torch.no_grad()
def mean_loss(model: Any, data: list[Encoded], batch_size: int, pad_id: int, device: str, autocast: Any,
              packed: bool = False) -> float:
    """Mean token loss over a data set (the held-out eval_loss)."""
    model.eval()
    total, count = torch.zeros((), device=device), 0
    ordered = sorted(data, key=lambda e: len(e[0]))  # similar lengths together: less padding
    for i in range(0, len(ordered), batch_size):
        chunk = ordered[i : i + batch_size]
        batch = pack(chunk, device=device) if packed else collate(chunk, pad_id, device)
        total += token_loss_sum(model, batch, autocast)
        count += batch.n_labels
    model.train()
    return float(total) / max(count, 1)


def report_steps(total_steps: int, n_reports: int) -> set[int]:
    """Evenly spaced optimizer steps (1-based) at which to evaluate and report; the last is the end."""
    n = min(n_reports, total_steps)
    return {max(1, round(total_steps * k / n)) for k in range(1, n + 1)}


def memory(device: str) -> dict[str, float]:
    """This worker's memory, reported with every result: rss_mb now, peak_rss_mb (and peak_gpu_mb on a
    GPU) since the trial started (trainables.distributed.trial_process resets the peaks when a worker
    runs another trial; where Linux's clear_refs is not available, since the worker started)."""
    import resource

    import psutil

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    out = {"rss_mb": psutil.Process().memory_info().rss / 2**20, "peak_rss_mb": peak_kb / 1024}
    if device == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out
