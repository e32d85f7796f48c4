"""Per-example difficulty under the base model: response loss (and perplexity) and IFD.

  loss        mean cross-entropy of the final response given its full context (what training sees)
  loss_alone  the same response tokens after an empty user turn (the instruction removed)
  ifd         loss / loss_alone (Cherry LLM's Instruction-Following Difficulty): near 1 the instruction
              barely helps predict the response; low, it explains most of it
  ppl         exp(loss)

Both passes score exactly the same response tokens: the response is cut where max_len cuts the
conditioned sequence. A prompt that fills max_len leaves nothing to score: NaN.

Scores are cached on disk (trainables.paths.cache_dir("difficulty")), one JSON line per example,
keyed by the example's content hash, in a file per model name + max_len. Lines are appended batch
by batch, so an interrupted run resumes where it stopped and every later pool or trial that holds
the same examples reuses them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from trainables.data.formats import Example, example_key
from trainables.data.prompt_template import template_tag
from trainables.data.tokenize import IGNORE, last_turn
from trainables.paths import cache_dir

SCORES = ("loss", "loss_alone", "ifd", "ppl")


def model_name_of(model: Any) -> str:
    return str(getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "") or "model")


def cache_file(model_name: str, max_len: int) -> Path:
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(model_name).name)[:60]
    digest = hashlib.sha1(model_name.encode()).hexdigest()[:10]
    return cache_dir("difficulty") / f"{slug}-{digest}-len{max_len}.jsonl"


def _read_cache(path: Path) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: recomputed
                continue
            out[row.pop("key")] = row
    return out


def _sequences(tokenizer: Any, e: Example, max_len: int) -> tuple[list[int], int, list[int], int] | None:
    """(conditioned ids, response start, unconditioned ids, response start) over the same response
    tokens; None when the prompt leaves no response token within max_len."""
    context, response = last_turn(tokenizer, e.messages)
    kept = response[: max(0, max_len - len(context))]
    if not kept:
        return None
    system = [m for m in e.messages if m["role"] == "system"]
    alone_ctx, _ = last_turn(tokenizer, [*system, {"role": "user", "content": ""}, e.messages[-1]])
    return context + kept, len(context), alone_ctx + kept, len(alone_ctx)


def _losses(model: Any, pad_id: int, seqs: list[tuple[list[int], int]]) -> list[float]:
    """Mean token loss of ids[start:] for each (ids, start), in one right-padded batch, with logits only
    where a response token is predicted (the vocabulary head skips the prompt). Not packed: a packed
    row's attention grows with the square of the whole row, more than padding similar lengths costs."""
    from contextlib import nullcontext

    from trainables.batching import collate, token_losses

    rows = [(ids, [IGNORE] * start + ids[start:]) for ids, start in seqs]
    batch = collate(rows, pad_id, str(next(model.parameters()).device))
    losses, valid = token_losses(model, batch, nullcontext), batch.targets != IGNORE
    return [float(losses[r][valid[r]].mean()) for r in range(len(seqs))]


def score_examples(
    examples: list[Example], model: Any, tokenizer: Any, *, max_len: int, batch_size: int = 8,
    progress: bool = True, model_name: str | None = None,
) -> list[dict[str, float]]:
    """SCORES for each example (cached, resumable). Model in eval mode under no_grad; its mode is restored."""

    path = cache_file((model_name or model_name_of(model)) + template_tag(tokenizer), max_len)
    # Concurrent trials that need the same scores queue on this lock: the second finds them cached.
    with path.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _score_locked(path, examples, model, tokenizer, max_len, batch_size, progress)


def _score_locked(path: Path, examples: list[Example], model: Any, tokenizer: Any, max_len: int, batch_size: int,
                  progress: bool) -> list[dict[str, float]]:
    import torch
    from tqdm import tqdm

    cached = _read_cache(path)
    keys = [example_key(e) for e in examples]
    todo = {k: e for k, e in zip(keys, examples, strict=True) if k not in cached}
    if todo:
        # Similar lengths together: less padding per batch.
        prepared = [(k, _sequences(tokenizer, e, max_len)) for k, e in todo.items()]
        nan = float("nan")
        for k, seq in prepared:
            if seq is None:
                cached[k] = {"loss": nan, "loss_alone": nan, "ifd": nan, "ppl": nan}
        items = sorted(((k, seq) for k, seq in prepared if seq is not None), key=lambda t: len(t[1][0]))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        was_training = model.training
        model.eval()
        bar = tqdm(total=len(items), desc=f"difficulty ({len(keys) - len(todo)} cached)",
                   disable=not progress, unit="ex")
        try:
            with torch.no_grad(), path.open("a", encoding="utf-8") as f:
                for b in range(0, len(items), batch_size):
                    chunk = items[b : b + batch_size]
                    # with and without the instruction in two batches: each of similar lengths (less padding)
                    with_instruction = _losses(model, pad, [(c_ids, c_at) for _, (c_ids, c_at, _, _) in chunk])
                    without = _losses(model, pad, [(a_ids, a_at) for _, (_, _, a_ids, a_at) in chunk])
                    lines = []
                    for (key, _), loss, alone in zip(chunk, with_instruction, without, strict=True):
                        row = {"loss": loss, "loss_alone": alone, "ifd": loss / alone if alone > 0 else float("nan"),
                               "ppl": math.exp(min(loss, 50)) if loss == loss else float("nan")}
                        cached[key] = row
                        lines.append(json.dumps({"key": key, **row}) + "\n")
                    f.write("".join(lines))  # one write per batch: a kill loses at most this batch
                    f.flush()
                    bar.update(len(chunk))
        finally:
            bar.close()
            model.train(was_training)
    return [cached[k] for k in keys]


def attach_scores(examples: list[Example], model: Any, tokenizer: Any, **kwargs: Any) -> None:
    """Score the examples and store the SCORES in each Example.meta (for rankings and curricula)."""
    for e, s in zip(examples, score_examples(examples, model, tokenizer, **kwargs), strict=True):
        e.meta.update(s)
