"""Perplexity of reference answers given their prompts (prompt tokens masked, as in training).

Metrics per set (name: the entry's name, default its file name): loss_<name> (mean token loss over all
answer tokens, token-weighted), ppl_<name> = exp(loss_<name>) (token-weighted perplexity), ppl_mean_<name>
(the mean of every row's own perplexity), ppl_<name>_n_scored, ppl_<name>_n_skipped and, per reason a row
could not be read, ppl_<name>_skipped_<reason>. Per-row losses go to <trial_dir>/perplexity_<name>.jsonl.
"""

from __future__ import annotations

import functools
import json
import math
import re
import statistics
from typing import TYPE_CHECKING, Any

from trainables.data.formats import LoadReport, load_with_report
from trainables.data.tokenize import IGNORE, encode
from trainables.evaluate import EVALUATORS, EvalContext, EvalInputError, Evaluator
from trainables.evaluate.common import batches, icl_messages, keep_tail, pad_id, token_logprobs
from trainables.paths import atomic_write_text

if TYPE_CHECKING:
    from trainables.data.formats import Example
    from trainables.schema.eval import EvalConfig, PerplexitySet

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


def _exp(x: float) -> float:
    return math.exp(x) if x < 709 else math.inf  # past float range: inf, not an OverflowError


def _slug(reason: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_")[:40] or "other"


def load_set(ps: PerplexitySet, limit: int | None) -> tuple[list[Example], LoadReport]:
    """The set's scorable rows (its own column mapping; the first `limit`) and what happened to the others."""
    return load_with_report(ps.path, "auto", f"eval.perplexity.{ps.name}.path", fields=ps.fields,
                            limit=ps.limit or limit)


def set_problems(ps: PerplexitySet, report: LoadReport) -> list[str]:
    """Zero rows, or more unscorable rows than ps.max_skipped_fraction: one line naming the set and the fix."""
    where = f"eval.perplexity.{ps.name}"
    if report.loaded and report.n_bad <= ps.max_skipped_fraction * report.rows:
        return []
    fix = (f"map its columns with {where}.fields (as data.fields: {{instruction: <prompt column>, output: "
           f"<answer column>}})")
    if report.loaded:
        fix += f", or raise {where}.max_skipped_fraction (now {ps.max_skipped_fraction})"
    if not report.rows:
        return [f"{where}: {ps.path} holds no rows"]
    reasons = ", ".join(f"{n}x {why}" for why, n in report.bad.most_common())
    sample = report.samples[0].replace("; set data.format / data.fields", "") if report.samples else ""
    return [f"{where}: {report.n_bad} of {report.rows} rows of {ps.path} cannot be scored ({reasons}; "
            f"e.g. {sample}); {fix}"]


def set_metrics(name: str, scores: list[tuple[float, int]], report: LoadReport) -> dict[str, float]:
    """ppl_<name>: exp(token-weighted mean loss) = exp(loss_<name>); ppl_mean_<name>: mean over rows of each
    row's own perplexity (what courses call "mean perplexity"); counts of scored and skipped rows."""
    nll, n = sum(s for s, _ in scores), sum(k for _, k in scores)
    loss = nll / n if n else float("nan")
    per_row = [_exp(s / k) for s, k in scores if k]
    out = {f"loss_{name}": loss, f"ppl_{name}": _exp(loss) if n else float("nan"),
           f"ppl_mean_{name}": statistics.fmean(per_row) if per_row else float("nan"),
           f"ppl_{name}_n_scored": float(len(scores)), f"ppl_{name}_n_skipped": float(report.n_bad)}
    out.update({f"ppl_{name}_skipped_{_slug(why)}": float(k) for why, k in report.bad.items()})
    return out


def run(ctx: EvalContext) -> dict[str, float]:
    cfg = ctx.cfg
    icl = icl_messages(ctx.train_pool, cfg.icl_shots, cfg.icl_seed)
    metrics: dict[str, float] = {}
    for ps in cfg.perplexity:
        examples, report = load_set(ps, cfg.perplexity_limit)
        problems = set_problems(ps, report)
        if problems:
            raise EvalInputError(problems[0])
        scores = score_examples(ctx.model, ctx.tokenizer, examples, batch_size=cfg.batch_size,
                                max_len=cfg.max_len, icl=icl)
        metrics.update(set_metrics(ps.name, scores, report))
        rows = [json.dumps({"id": e.id, "nll": s, "tokens": k, "ppl": _exp(s / k) if k else None})
                for e, (s, k) in zip(examples, scores, strict=True)]
        atomic_write_text(ctx.trial_dir / f"perplexity_{ps.name}.jsonl", "\n".join(rows) + "\n")
    return metrics


@functools.lru_cache(maxsize=64)
def _problems_of(ps_json: str, limit: int | None) -> tuple[str, ...]:
    from trainables.schema.eval import PerplexitySet

    ps = PerplexitySet.model_validate_json(ps_json)
    return tuple(set_problems(ps, load_set(ps, limit)[1]))


def check(cfg: EvalConfig) -> list[str]:
    """Every perplexity set that cannot be scored as configured (read once per process and setting)."""
    return [p for ps in cfg.perplexity for p in _problems_of(ps.model_dump_json(), cfg.perplexity_limit)]


def metrics(cfg: EvalConfig) -> list[str]:
    kinds = ("ppl_{}", "loss_{}", "ppl_mean_{}", "ppl_{}_n_scored", "ppl_{}_n_skipped")
    return [k.format(ps.name) for ps in cfg.perplexity for k in kinds]


EVALUATORS.register("perplexity")(Evaluator(enabled=lambda c: bool(c.perplexity), metrics=metrics, run=run, check=check,
                                            objectives={"ppl_*_n_*": None, "ppl_*": "min", "loss_*": "min"}))
