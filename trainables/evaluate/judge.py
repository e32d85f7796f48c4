"""LLM judge of the generated answers (runs after `generate`).

pairwise  reference (Assistant 1) vs the model (Assistant 2), two 1-10 scores on the first line;
          with swap the pair is also judged in the other order and each side's scores are averaged,
          which cancels the judge's preference for a position.
single    one 1-10 grade per answer (given the reference in the prompt when there is one).
Metrics: judge_score (mean model score), judge_parse_failures (replies with no readable score),
judge_errors (requests that failed after all retries), judge_n, judge_requests, judge_cache_hits,
judge_prompt_tokens, judge_completion_tokens, judge_cost_usd, judge_seconds; pairwise adds
judge_ref_score and judge_win_rate (model beats reference = 1, tie = 0.5).
Files: judge.jsonl (every row with its replies), judge_failures.jsonl, judge_usage.json.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import TYPE_CHECKING, Any

from trainables.evaluate import EVALUATORS, EvalContext, Evaluator
from trainables.evaluate.judge_client import JudgeClient, Messages, Reply
from trainables.evaluate.judge_prompts import (
    PAIRWISE,
    SINGLE,
    SINGLE_REF,
    SYSTEM,
    fill,
    parse_pair,
    parse_single,
)
from trainables.evaluate.prompts import load_prompts
from trainables.paths import atomic_write_text, find_data

if TYPE_CHECKING:
    from trainables.evaluate.config import EvalConfig, JudgeConfig


def _question(messages: list[dict[str, str]]) -> str:
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else ""


def _template(cfg: JudgeConfig, has_ref: bool) -> tuple[str, bool]:
    """(template text, whether to send the default system prompt)."""
    if cfg.template:
        return find_data(cfg.template).read_text(encoding="utf-8"), False  # type: ignore[union-attr]
    if cfg.mode == "pairwise":
        return PAIRWISE, True
    return (SINGLE_REF if has_ref else SINGLE), True


def _messages(text: str, system: bool) -> Messages:
    return ([{"role": "system", "content": SYSTEM}] if system else []) + [{"role": "user", "content": text}]


def plan_requests(cfg: JudgeConfig, rows: list[dict[str, Any]]) -> list[tuple[int, str, Messages]]:
    """(row index, order tag, messages) for every request: 'ref_first', 'model_first' or 'single'."""
    out = []
    for i, r in enumerate(rows):
        q, ans, ref = _question(r["input"]), r["output"], r.get("reference")
        tpl, system = _template(cfg, bool(ref))
        if cfg.mode == "single":
            out.append((i, "single", _messages(fill(tpl, question=q, answer=ans, reference=ref or ""), system)))
            continue
        out.append((i, "ref_first", _messages(fill(tpl, question=q, answer_1=ref, answer_2=ans, reference=ref),
                                              system)))
        if cfg.swap:
            out.append((i, "model_first", _messages(fill(tpl, question=q, answer_1=ans, answer_2=ref,
                                                         reference=ref), system)))
    return out


def _model_ref(tag: str, pair: tuple[float, float]) -> tuple[float, float]:
    """(model score, reference score) from a pairwise reply in either order."""
    return (pair[1], pair[0]) if tag == "ref_first" else (pair[0], pair[1])


def score_rows(cfg: JudgeConfig, rows: list[dict[str, Any]], plan: list[tuple[int, str, Messages]],
               replies: list[Reply]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-row results (model/ref score averaged over the orders that parsed) and the failure records."""
    per_row: list[dict[str, Any]] = [{"id": r["id"], "replies": {}, "model": [], "ref": []} for r in rows]
    failures = []
    for (i, tag, _), rep in zip(plan, replies, strict=True):
        row = per_row[i]
        row["replies"][tag] = rep.text if rep.error is None else {"error": rep.error}
        if rep.error is not None:
            failures.append({"id": row["id"], "order": tag, "kind": "error", "error": rep.error,
                             "attempts": rep.attempts})
            continue
        if tag == "single":
            s = parse_single(rep.text)
            parsed = None if s is None else (s, None)
        else:
            pair = parse_pair(rep.text)
            parsed = None if pair is None else _model_ref(tag, pair)
        if parsed is None:
            failures.append({"id": row["id"], "order": tag, "kind": "unparseable", "reply": rep.text})
            continue
        row["model"].append(parsed[0])
        if parsed[1] is not None:
            row["ref"].append(parsed[1])
    for row in per_row:
        row["model_score"] = statistics.fmean(row["model"]) if row["model"] else None
        row["ref_score"] = statistics.fmean(row["ref"]) if row["ref"] else None
    return per_row, failures


def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else float("nan")


def judge_generations(cfg: JudgeConfig, rows: list[dict[str, Any]], trial_dir: Any,
                      client: JudgeClient | None = None) -> dict[str, float]:
    """Judge `rows` (dicts with id, input, output, reference); write the record files; return metrics."""
    t0 = time.perf_counter()
    skipped = 0
    if cfg.mode == "pairwise":
        skipped = sum(1 for r in rows if not r.get("reference"))
        rows = [r for r in rows if r.get("reference")]  # pairwise-with-reference needs one
    plan = plan_requests(cfg, rows)
    own = client is None
    client = client or JudgeClient(cfg)
    try:
        replies = client.ask_many([m for _, _, m in plan])
    finally:
        if own:
            client.close()
    per_row, failures = score_rows(cfg, rows, plan, replies)
    scored = [r for r in per_row if r["model_score"] is not None]
    p_tok = sum(r.prompt_tokens for r in replies)
    c_tok = sum(r.completion_tokens for r in replies)
    cost = (p_tok * cfg.price_prompt_per_mtok + c_tok * cfg.price_completion_per_mtok) / 1e6
    paid = [r for r in replies if not r.cached and r.error is None]
    paid_cost = (sum(r.prompt_tokens for r in paid) * cfg.price_prompt_per_mtok
                 + sum(r.completion_tokens for r in paid) * cfg.price_completion_per_mtok) / 1e6
    metrics = {
        "judge_score": _mean([r["model_score"] for r in scored]),
        "judge_parse_failures": float(sum(f["kind"] == "unparseable" for f in failures)),
        "judge_errors": float(sum(f["kind"] == "error" for f in failures)),
        "judge_n": float(len(scored)),
        "judge_requests": float(len(plan)),
        "judge_cache_hits": float(sum(r.cached for r in replies)),
        "judge_prompt_tokens": float(p_tok),
        "judge_completion_tokens": float(c_tok),
        "judge_cost_usd": cost,
        "judge_seconds": time.perf_counter() - t0,
    }
    if cfg.mode == "pairwise":
        both = [r for r in scored if r["ref_score"] is not None]
        metrics["judge_ref_score"] = _mean([r["ref_score"] for r in both])
        metrics["judge_win_rate"] = _mean([1.0 if r["model_score"] > r["ref_score"] else
                                           0.5 if r["model_score"] == r["ref_score"] else 0.0 for r in both])
    atomic_write_text(trial_dir / "judge.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in per_row))
    atomic_write_text(trial_dir / "judge_failures.jsonl",
                      "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures))
    usage = {"judge_model": cfg.model, "base_url": cfg.base_url, "mode": cfg.mode, "swap": cfg.swap,
             "requests": len(plan), "cache_hits": int(metrics["judge_cache_hits"]),
             "skipped_without_reference": skipped, "prompt_tokens": p_tok, "completion_tokens": c_tok,
             "estimated_cost_usd": cost, "paid_this_run_usd": paid_cost}
    atomic_write_text(trial_dir / "judge_usage.json", json.dumps(usage, indent=1))
    return metrics


def _rows_for(ctx: EvalContext) -> list[dict[str, Any]]:
    cfg = ctx.cfg.judge
    rows = ctx.shared.get("generations")
    if rows is None:  # judging an earlier run's outputs
        path = ctx.trial_dir / "generations.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = rows[: cfg.limit]
    if cfg.references:
        refs = {p.id: p.reference for p in load_prompts(cfg.references, "eval.judge.references")}
        rows = [{**r, "reference": refs.get(r["id"])} for r in rows]
    return rows


def run(ctx: EvalContext) -> dict[str, float]:
    return judge_generations(ctx.cfg.judge, _rows_for(ctx), ctx.trial_dir)


def metrics(cfg: EvalConfig) -> list[str]:
    names = ["judge_score", "judge_parse_failures", "judge_errors", "judge_n", "judge_requests",
             "judge_cache_hits", "judge_prompt_tokens", "judge_completion_tokens", "judge_cost_usd",
             "judge_seconds"]
    return names + (["judge_ref_score", "judge_win_rate"] if cfg.judge.mode == "pairwise" else [])


# judge_ref_score grades the reference, not the model: a diagnostic like the counts and the cost.
EVALUATORS.register("judge")(Evaluator(enabled=lambda c: c.judge.enabled, metrics=metrics, run=run,
                                       objectives={"judge_score": "max", "judge_win_rate": "max"}))
