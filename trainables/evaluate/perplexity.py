"""Perplexity of reference answers given their prompts (prompt tokens masked, as in training).

Metrics per file: loss_<stem> (mean token loss over all answer tokens, token-weighted) and
ppl_<stem> = exp(loss_<stem>). Per-row losses go to <trial_dir>/perplexity_<stem>.jsonl.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from trainables.data.formats import load_examples
from trainables.data.tokenize import IGNORE, encode
from trainables.evaluate import EVALUATORS, EvalContext, Evaluator
from trainables.evaluate.common import batches, icl_messages, keep_tail, pad_id, token_logprobs
from trainables.evaluate.config import metric_stem
from trainables.paths import atomic_write_text

if TYPE_CHECKING:
    from trainables.data.formats import Example
    from trainables.evaluate.config import EvalConfig

_NO_LIMIT = 1 << 30  # encode() cuts from the right; we cut from the left ourselves (keep_tail)


def with_icl(messages: list[dict[str, str]], icl: list[dict[str, str]]) -> tuple[list[dict[str, str]], int]:
    """Insert in-context turns after any system message; return (messages, index where the row starts)."""
    head = 1 if messages and messages[0]["role"] == "system" else 0
    return messages[:head] + icl + messages[head:], head + len(icl)


def encode_scored(tokenizer: Any, messages: list[dict[str, str]], icl: list[dict[str, str]],
                  max_len: int) -> tuple[list[int], list[int]]:
    """encode() the row behind its in-context turns; only the row's own answers keep labels."""
    full, start = with_icl(messages, icl)
    ids, labels = encode(tokenizer, full, _NO_LIMIT)
    if icl:
        # encode() is prefix-consistent, so the in-context part is exactly the encoding of full[:start].
        n_icl = len(encode(tokenizer, full[:start], _NO_LIMIT)[0])
        labels = [IGNORE] * n_icl + labels[n_icl:]
    return keep_tail(ids, labels, max_len)


def score_examples(model: Any, tokenizer: Any, examples: list[Example], *, batch_size: int, max_len: int,
                   icl: list[dict[str, str]] | None = None) -> list[tuple[float, int]]:
    """(summed negative log-likelihood, answer tokens) per example, in input order."""
    enc = [encode_scored(tokenizer, e.messages, icl or [], max_len) for e in examples]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i][0]))  # similar lengths: less padding
    out: list[tuple[float, int]] = [(0.0, 0)] * len(enc)
    for idx in batches(order, batch_size):
        for i, (logp, n) in zip(idx, token_logprobs(model, [enc[i] for i in idx], pad_id(tokenizer)), strict=True):
            out[i] = (-logp, n)
    return out


def run(ctx: EvalContext) -> dict[str, float]:
    cfg = ctx.cfg
    icl = icl_messages(ctx.train_pool, cfg.icl_shots, cfg.icl_seed)
    metrics: dict[str, float] = {}
    for path in cfg.perplexity:
        stem = metric_stem(path)
        examples = load_examples(path, field_name="eval.perplexity")[: cfg.perplexity_limit]
        scores = score_examples(ctx.model, ctx.tokenizer, examples, batch_size=cfg.batch_size,
                                max_len=cfg.max_len, icl=icl)
        nll, n = sum(s for s, _ in scores), sum(k for _, k in scores)
        loss = nll / n if n else float("nan")
        metrics[f"loss_{stem}"] = loss
        metrics[f"ppl_{stem}"] = math.exp(loss) if n else float("nan")
        rows = [json.dumps({"id": e.id, "nll": s, "tokens": k}) for e, (s, k) in zip(examples, scores, strict=True)]
        atomic_write_text(ctx.trial_dir / f"perplexity_{stem}.jsonl", "\n".join(rows) + "\n")
    return metrics


def metrics(cfg: EvalConfig) -> list[str]:
    return [f"{kind}_{metric_stem(p)}" for p in cfg.perplexity for kind in ("ppl", "loss")]


EVALUATORS.register("perplexity")(Evaluator(enabled=lambda c: bool(c.perplexity), metrics=metrics, run=run,
                                            objectives={"ppl_*": "min", "loss_*": "min"}))
