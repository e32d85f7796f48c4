"""Small pieces the evaluators share: batching, token log-probabilities, in-context examples."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from trainables.data.tokenize import IGNORE

if TYPE_CHECKING:
    import torch

    from trainables.data.formats import Example


def model_device(model: Any) -> Any:
    return next(model.parameters()).device


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def pad_id(tokenizer: Any) -> int:
    pid = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pid if pid is not None else 0)


def keep_tail(ids: list[int], labels: list[int], max_len: int) -> tuple[list[int], list[int]]:
    """Cut from the left: the scored answer sits at the end and must survive truncation."""
    return (ids[-max_len:], labels[-max_len:]) if len(ids) > max_len else (ids, labels)


def token_logprobs(model: Any, seqs: list[tuple[list[int], list[int]]], pad: int) -> list[tuple[float, int]]:
    """For each (input_ids, labels) return (sum of log p(label token), number of labelled tokens).

    Rows are right-padded (causal attention + mask keeps positions exact); labels == IGNORE are skipped.
    """
    import torch

    width = max(len(ids) for ids, _ in seqs)
    ids_t = torch.full((len(seqs), width), pad, dtype=torch.long)
    lab_t = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, (ids, labels) in enumerate(seqs):
        ids_t[r, : len(ids)] = torch.tensor(ids)
        lab_t[r, : len(labels)] = torch.tensor(labels)
        mask[r, : len(ids)] = 1
    dev = model_device(model)
    with torch.no_grad():
        logits = model(input_ids=ids_t.to(dev), attention_mask=mask.to(dev)).logits[:, :-1].float()
    return _gather(logits, lab_t[:, 1:].to(logits.device))


def _gather(logits: torch.Tensor, labels: torch.Tensor) -> list[tuple[float, int]]:
    import torch

    logp = torch.log_softmax(logits, dim=-1)
    valid = labels != IGNORE
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
    return [(float(s), int(n)) for s, n in zip(picked.sum(-1), valid.sum(-1), strict=True)]


def last_token_logprobs(model: Any, prompts: list[list[int]], pad: int) -> torch.Tensor:
    """log p(next token | prompt) for each prompt: (batch, vocab). One forward for all candidates
    when every candidate continuation is a single token (MCQ letters)."""
    import torch

    width = max(len(p) for p in prompts)
    ids_t = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids_t[r, : len(p)] = torch.tensor(p)
        mask[r, : len(p)] = 1
    dev = model_device(model)
    with torch.no_grad():
        logits = model(input_ids=ids_t.to(dev), attention_mask=mask.to(dev)).logits
    last = torch.tensor([len(p) - 1 for p in prompts], device=logits.device)
    return torch.log_softmax(logits[torch.arange(len(prompts), device=logits.device), last].float(), dim=-1)


def icl_messages(pool: list[Example] | None, k: int, seed: int) -> list[dict[str, str]]:
    """k in-context (user, assistant) turns drawn from the training pool (baselines: base model k-shot).

    Drawn once per (seed, k), the same for every test row, so scores compare across rows and trials.
    """
    if k <= 0 or not pool:
        return []
    rng = random.Random(seed)
    candidates = [e for e in pool if len(e.messages) >= 2]
    shots = rng.sample(candidates, min(k, len(candidates)))
    out: list[dict[str, str]] = []
    for e in shots:
        out += [m for m in e.messages if m["role"] != "system"][-2:]  # last user turn + its answer
    return out


def skipped_problem(field: str, what: str, total: int, skipped: dict[str, int], max_fraction: float,
                    fixes: dict[str, str], done: str = "scored") -> str | None:
    """One line when nothing was scored, or more than `max_fraction` of `total` was skipped: the counts by
    reason and the fix for the commonest one (`fixes` by reason); None when the evaluation is usable."""
    n_skipped = sum(skipped.values())
    if total and n_skipped == 0:
        return None
    if total and n_skipped <= max_fraction * total:
        return None
    reasons = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in sorted(skipped.items(), key=lambda x: -x[1]) if n)
    top = max(skipped, key=lambda r: skipped[r]) if n_skipped else None
    scored = total - n_skipped
    head = f"{field}: {scored} of {total} {what} {done}" if total else f"{field}: nothing to score"
    limit = "" if scored == 0 else f", more than {field}.max_skipped_fraction ({max_fraction:g}) allows"
    fix = fixes.get(top, "") if top else ""
    return f"{head} ({reasons}{limit}){'; ' + fix if fix else ''}"
