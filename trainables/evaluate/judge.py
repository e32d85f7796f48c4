"""LLM judge of the generated answers (runs after `generate`).

pairwise  the reference against the model's answer: two 1-10 scores ([[rating_a,rating_b]], the built-in
          prompt) or a verdict [[A]] / [[B]] / [[C]] (MT-bench's pair prompts); with swap the pair is
          also judged in the other order and the orders are averaged, which cancels the judge's
          preference for a position, and judge_swap_agreement says how often both orders agreed.
single    one 1-10 grade per answer ([[rating]]; given the reference when the prompt shows one).
Each turn of a multi-turn question is judged: turn 1 with the prompt, later turns with its
'-multi-turn' variant (or the built-in one), which shows the conversation before it.
Prompts: judge_prompts.py; verdicts: judge_parse.py (schema-constrained JSON where the endpoint keeps to
it, judge_client.py). A judged turn without a verdict is skipped, by reason: no_reference, no_answer,
unparseable, failed (the request failed or was not sent); more than eval.judge.max_skipped_fraction
of them, or none scored, fails the trial (EvalInputError naming the field and the fix).

Metrics: judge_score (mean model score; not for [[A]] verdicts), judge_n_scored, judge_n_skipped,
judge_skipped_<reason>, judge_parse_failures (unreadable replies), judge_errors (failed or unsent
requests), judge_structured (share of replies asked with a JSON schema), judge_requests, judge_cache_hits,
judge_prompt_tokens, judge_completion_tokens, judge_cost_usd, judge_seconds; pairwise adds judge_win_rate
(model beats reference = 1, tie = 0.5), judge_ref_score (two-score prompts) and, with swap,
judge_swap_agreement and judge_swap_pairs; multi-turn questions add <judge_score|judge_win_rate>_turn_<k>.
Files: judge.jsonl (every judged turn with its replies), judge_failures.jsonl, judge_usage.json.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainables.evaluate import EVALUATORS, EvalContext, EvalInputError, Evaluator
from trainables.evaluate.common import skipped_problem
from trainables.evaluate.judge_client import JudgeClient, Messages, Reply
from trainables.evaluate.judge_parse import parse_verdict
from trainables.evaluate.judge_prompts import (
    PAIR_SCORES,
    RATING,
    SYSTEM,
    VERDICT,
    JudgePrompt,
    PromptSet,
    fill,
    verdict_schema,
)
from trainables.evaluate.prompts import load_prompts, load_references
from trainables.paths import atomic_write_text

if TYPE_CHECKING:
    from trainables.schema.eval import EvalConfig, JudgeConfig

REASONS = ("no_reference", "no_answer", "unparseable", "failed")


@dataclass
class Item:
    """One judged turn of one question."""

    id: str
    turn: int  # 1-based
    questions: list[str]  # the user's turns 1..turn
    answers: list[str]  # the model's answers 1..turn
    refs: list[str | None]  # references 1..turn
    prompt: JudgePrompt | None = None
    skip: str | None = None  # reason (REASONS) when it is not sent
    replies: dict[str, Any] = field(default_factory=dict)
    model: list[float] = field(default_factory=list)  # model scores of the orders that parsed
    ref: list[float] = field(default_factory=list)
    wins: dict[str, float] = field(default_factory=dict)  # order -> 1 model better, 0.5 tie, 0 reference better


def _question(messages: list[dict[str, str]]) -> str:
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else ""


def row_turns(r: dict[str, Any]) -> tuple[list[str], list[str], list[str | None]]:
    """(questions, answers, references) of a generated row, one per turn (answers: those generated)."""
    questions = r.get("turns") or [_question(r["input"])]
    answers = r.get("outputs")
    if answers is None:
        answers = [] if r.get("unanswered_turns") else [r["output"]]
    refs = list(r.get("references") or [r.get("reference")])
    return questions, answers, (refs + [None] * len(questions))[: len(questions)]


def make_items(ps: PromptSet, rows: list[dict[str, Any]]) -> list[Item]:
    """Every turn of every row, with its prompt, or the reason it cannot be judged."""
    items = []
    for r in rows:
        questions, answers, refs = row_turns(r)
        for t in range(1, len(questions) + 1):
            has_ref = all(refs[:t])
            it = Item(str(r["id"]), t, questions[:t], answers[:t], refs[:t], ps.for_turn(t, has_ref))
            if len(answers) < t:
                it.skip = "no_answer"
            elif ps.needs_reference(t, has_ref) and not has_ref:
                it.skip = "no_reference"
            items.append(it)
    return items


def _history(questions: list[str], answers: list[str | None]) -> str:
    return "\n\n".join(f"### User:\n{q}\n\n### Assistant:\n{a or ''}" for q, a in zip(questions, answers, strict=True))


def _values(mode: str, it: Item, order: str) -> dict[str, str]:
    """The placeholders of a turn (judge_prompts' table); in pairwise, A is shown first."""
    t, qs = it.turn, it.questions
    refs = [x or "" for x in it.refs]
    v = {"question": qs[-1], "reference": refs[-1]}
    for k in range(1, t + 1):
        v[f"question_{k}"], v[f"ref_answer_{k}"] = qs[k - 1], refs[k - 1]
    if mode == "single":
        v.update(answer=it.answers[-1], history=_history(qs[:-1], it.answers[:-1]))
        v.update({f"answer_{k}": it.answers[k - 1] for k in range(1, t + 1)})
        return v
    a, b = (refs, it.answers) if order == "ref_first" else (it.answers, refs)
    v.update(answer_a=a[-1], answer_b=b[-1], history_a=_history(qs[:-1], list(a[:-1])),
             history_b=_history(qs[:-1], list(b[:-1])))
    for k in range(1, t + 1):
        v[f"answer_a_{k}"], v[f"answer_b_{k}"] = a[k - 1], b[k - 1]
    return v


def _messages(p: JudgePrompt, mode: str, values: dict[str, str]) -> Messages:
    system = SYSTEM if p.system is None else p.system
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": "user", "content": fill(p.template, mode, values)}]


def plan_requests(ps: PromptSet, items: list[Item], swap: bool) -> list[tuple[int, str, Messages]]:
    """(item index, order, messages) for every request: 'single', or 'ref_first' / 'model_first'."""
    orders = ["single"] if ps.mode == "single" else ["ref_first", "model_first"] if swap else ["ref_first"]
    return [(i, o, _messages(it.prompt, ps.mode, _values(ps.mode, it, o)))  # type: ignore[arg-type]
            for i, it in enumerate(items) if it.skip is None for o in orders]


def _read(kind: str, order: str, verdict: Any) -> tuple[float | None, float | None, float]:
    """(model score, reference score, model's win value) from a parsed verdict in either order."""
    if kind == RATING:
        return verdict, None, float("nan")
    model_first = order == "model_first"
    if kind == PAIR_SCORES:
        a, b = verdict
        model, ref = (a, b) if model_first else (b, a)
        return model, ref, 1.0 if model > ref else 0.5 if model == ref else 0.0
    model_is = "A" if model_first else "B"
    return None, None, 0.5 if verdict == "C" else 1.0 if verdict == model_is else 0.0


def score(kind: str, items: list[Item], plan: list[tuple[int, str, Messages]],
          replies: list[Reply]) -> list[dict[str, Any]]:
    """Fill each item's scores from its replies; mark unscored ones; return the failure records."""
    failures: list[dict[str, Any]] = []
    for (i, order, _), rep in zip(plan, replies, strict=True):
        it = items[i]
        it.replies[order] = rep.text if rep.error is None else {"error": rep.error}
        if rep.error is not None:
            failures.append({"id": it.id, "turn": it.turn, "order": order, "kind": "error", "error": rep.error,
                             "attempts": rep.attempts, "sent": rep.sent})
            continue
        verdict = parse_verdict(kind, rep.text)
        if verdict is None:
            failures.append({"id": it.id, "turn": it.turn, "order": order, "kind": "unparseable",
                             "reply": rep.text, "format": rep.format})
            continue
        model, ref, win = _read(kind, order, verdict)
        if model is not None:
            it.model.append(model)
        if ref is not None:
            it.ref.append(ref)
        if kind != RATING:
            it.wins[order] = win
    for it in items:
        if it.skip is None and not it.wins and not it.model:
            unreadable = any(not isinstance(v, dict) for v in it.replies.values())
            it.skip = "unparseable" if unreadable else "failed"
    return failures


def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else float("nan")


def _win(kind: str, it: Item) -> float:
    if kind == PAIR_SCORES:  # from the scores averaged over the orders, so a position bias cancels
        m, r = statistics.fmean(it.model), statistics.fmean(it.ref)
        return 1.0 if m > r else 0.5 if m == r else 0.0
    return statistics.fmean(it.wins.values())


def _outcomes(kind: str, items: list[Item]) -> dict[str, float]:
    scored = [it for it in items if it.skip is None]
    out: dict[str, float] = {}
    if kind != VERDICT:
        out["judge_score"] = _mean([statistics.fmean(it.model) for it in scored])
    if kind == PAIR_SCORES:
        out["judge_ref_score"] = _mean([statistics.fmean(it.ref) for it in scored])
    if kind != RATING:
        out["judge_win_rate"] = _mean([_win(kind, it) for it in scored])
    turns = max((it.turn for it in items), default=1)
    main = "judge_score" if kind != VERDICT else "judge_win_rate"
    for t in range(1, turns + 1) if turns > 1 else ():
        at = [it for it in scored if it.turn == t]
        out[f"{main}_turn_{t}"] = _mean([statistics.fmean(it.model) if kind != VERDICT else _win(kind, it)
                                         for it in at])
    return out


def _swap(items: list[Item]) -> dict[str, float]:
    pairs = [it for it in items if len(it.wins) == 2]
    agree = [it.wins["ref_first"] == it.wins["model_first"] for it in pairs]
    return {"judge_swap_agreement": _mean([float(a) for a in agree]), "judge_swap_pairs": float(len(pairs))}


def _usage(cfg: JudgeConfig, replies: list[Reply]) -> dict[str, float]:
    p_tok = sum(r.prompt_tokens for r in replies)
    c_tok = sum(r.completion_tokens for r in replies)
    price_p, price_c = cfg.price_prompt_per_mtok or 0.0, cfg.price_completion_per_mtok or 0.0
    paid = [r for r in replies if not r.cached and r.error is None]
    answered = [r for r in replies if r.error is None]
    return {
        "judge_requests": float(len(replies)),
        "judge_cache_hits": float(sum(r.cached for r in replies)),
        "judge_errors": float(sum(r.error is not None for r in replies)),
        "judge_structured": _mean([float(r.format != "text") for r in answered]),
        "judge_prompt_tokens": float(p_tok),
        "judge_completion_tokens": float(c_tok),
        "judge_cost_usd": (p_tok * price_p + c_tok * price_c) / 1e6,
        "paid_this_run_usd": (sum(r.prompt_tokens for r in paid) * price_p
                              + sum(r.completion_tokens for r in paid) * price_c) / 1e6,
    }


def judge_generations(cfg: JudgeConfig, rows: list[dict[str, Any]], trial_dir: Any,
                      client: JudgeClient | None = None) -> dict[str, float]:
    """Judge `rows` (generated rows: id, input, output, reference; turns, outputs, references for several
    turns); write the record files; return the metrics (the caller decides whether they are usable)."""
    t0 = time.perf_counter()
    ps = cfg.prompts()
    items = make_items(ps, rows)
    plan = plan_requests(ps, items, cfg.swap)
    own = client is None
    client = client or JudgeClient(cfg)
    try:
        replies = client.ask_many([m for _, _, m in plan], verdict_schema(ps.kind))
    finally:
        if own:
            client.close()
    failures = score(ps.kind, items, plan, replies)
    usage = _usage(cfg, replies)
    skipped = {r: sum(it.skip == r for it in items) for r in REASONS}
    metrics = {
        **_outcomes(ps.kind, items),
        "judge_n_scored": float(sum(it.skip is None for it in items)),
        "judge_n_skipped": float(sum(skipped.values())),
        **{f"judge_skipped_{r}": float(n) for r, n in skipped.items()},
        "judge_parse_failures": float(sum(f["kind"] == "unparseable" for f in failures)),
        **{k: v for k, v in usage.items() if k != "paid_this_run_usd"},
    }
    if ps.mode == "pairwise" and cfg.swap:
        metrics.update(_swap(items))
    metrics["judge_seconds"] = time.perf_counter() - t0
    _write_records(Path(trial_dir), cfg, ps, items, failures, metrics, usage, client)
    return metrics


def _write_records(trial_dir: Path, cfg: JudgeConfig, ps: PromptSet, items: list[Item], failures: list[dict],
                   metrics: dict[str, float], usage: dict[str, float], client: JudgeClient) -> None:
    rows = [{"id": it.id, "turn": it.turn, "prompt": it.prompt.name if it.prompt else None, "skipped": it.skip,
             "replies": it.replies, "model_score": _mean(it.model) if it.model else None,
             "ref_score": _mean(it.ref) if it.ref else None, "orders": it.wins or None} for it in items]
    atomic_write_text(trial_dir / "judge.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic_write_text(trial_dir / "judge_failures.jsonl",
                      "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures))
    record = {"judge_model": cfg.model, "base_url": cfg.base_url, "mode": ps.mode, "verdict": ps.kind,
              "prompts": sorted({it.prompt.name for it in items if it.prompt}), "swap": cfg.swap,
              "response_format": client.known_format() if cfg.structured else "text",
              "requests": int(metrics["judge_requests"]), "cache_hits": int(metrics["judge_cache_hits"]),
              "scored": int(metrics["judge_n_scored"]),
              "skipped": {r: int(metrics[f"judge_skipped_{r}"]) for r in REASONS},
              "skipped_without_reference": int(metrics["judge_skipped_no_reference"]),
              "prompt_tokens": int(usage["judge_prompt_tokens"]),
              "completion_tokens": int(usage["judge_completion_tokens"]),
              "estimated_cost_usd": usage["judge_cost_usd"], "paid_this_run_usd": usage["paid_this_run_usd"]}
    atomic_write_text(trial_dir / "judge_usage.json", json.dumps(record, indent=1))


# ----------------------------------------------------------------------------- in a trial


def attach_references(cfg: JudgeConfig, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with the references of eval.judge.references (by id) when it is set."""
    if not cfg.references:
        return rows
    refs = load_references(cfg.references)
    out = []
    for r in rows:
        got = refs.get(str(r["id"]))
        out.append({**r, "reference": got[0] if got else None, "references": got})
    return out


def _fixes(cfg: JudgeConfig, trial_dir: Path, first_error: str | None) -> dict[str, str]:
    return {
        "no_reference": "pairwise mode compares each answer with its reference and the prompt shown needs one: "
                        "give eval.judge.references (answers keyed by id) or set eval.judge.mode: single",
        "no_answer": "the generation left turns unanswered (see eval.generate.max_new_tokens)",
        "unparseable": f"the judge's replies hold no verdict ({trial_dir / 'judge_failures.jsonl'}): use a "
                       "stronger eval.judge.model, a prompt whose output format it follows, or an endpoint that "
                       "accepts response_format (eval.judge.structured: true)",
        "failed": f"the judge at {cfg.base_url} did not answer ({first_error}); check that it is up, "
                  f"eval.judge.base_url, eval.judge.model and the key in {cfg.api_key_env}",
    }


def run(ctx: EvalContext) -> dict[str, float]:
    cfg = ctx.cfg.judge
    rows = ctx.shared.get("generations")
    if rows is None:  # judging an earlier run's outputs
        path = ctx.trial_dir / "generations.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        rows = attach_references(cfg, rows[: cfg.limit])
    except ValueError as e:
        raise EvalInputError(str(e)) from None
    m = judge_generations(cfg, rows, ctx.trial_dir)
    skipped = {r: int(m[f"judge_skipped_{r}"]) for r in REASONS}
    total = int(m["judge_n_scored"] + m["judge_n_skipped"])
    if skipped["failed"] or skipped["unparseable"]:
        print(f"judge: {int(m['judge_n_scored'])} of {total} answers scored; skipped: "
              + ", ".join(f"{n} {r}" for r, n in skipped.items() if n), flush=True)
    records = (ctx.trial_dir / "judge_failures.jsonl").read_text(encoding="utf-8").splitlines()
    first_error = next((f["error"] for f in map(json.loads, records) if f["kind"] == "error"), None)
    problem = skipped_problem("eval.judge", "judged answers", total, skipped, cfg.max_skipped_fraction,
                              _fixes(cfg, ctx.trial_dir, first_error))
    if problem:
        raise EvalInputError(problem)
    return m


def _turn_problems(ps: PromptSet, rows: list[Any], refs: dict[str, list[str | None]] | None) -> tuple[
        list[str], int, list[str]]:
    """(problems of turns no prompt can show, judged turns, ids of turns that need a missing reference)."""
    problems, missing, n = [], [], 0
    for row in rows:
        row_refs = refs.get(row.id) if refs is not None else row.references()
        row_refs = ((row_refs or []) + [None] * row.turns)[: row.turns]
        for t in range(1, row.turns + 1):
            n += 1
            has_ref = all(row_refs[:t])
            why = ps.turn_problem(t, has_ref)
            if why and not problems:
                problems.append(f"eval.judge.{why[0]}: question {row.id!r} has {row.turns} turns but {why[1]}; "
                                "use a prompt that shows the conversation (MT-bench's '<name>-multi-turn', "
                                "or the built-in one without eval.judge.template)")
            if ps.needs_reference(t, has_ref) and not has_ref:
                missing.append(row.id if t == 1 else f"{row.id} turn {t}")
    return problems, n, missing


def check(cfg: EvalConfig) -> list[str]:
    """Before generation (the driver's preflight, each trial's start): the references load and cover the
    questions, and every turn of every question has a prompt that can show it."""
    j = cfg.judge
    try:
        rows = load_prompts(cfg.generate.data or "", limit=cfg.generate.limit)[: j.limit]
    except ValueError:
        return []  # the generation's own check says what is wrong with the file
    try:
        refs = load_references(j.references) if j.references else None
    except ValueError as e:
        return [str(e)]
    ps = j.prompts()
    problems, n, missing = _turn_problems(ps, rows, refs)
    source = j.references or cfg.generate.data
    if refs is not None and not any(r.id in refs for r in rows):
        problems.append(f"eval.judge.references: none of the {len(rows)} question ids of {cfg.generate.data} "
                        f"(e.g. {rows[0].id!r}) is in {j.references} (e.g. {next(iter(refs))!r}); the references "
                        "are matched to the questions by id")
    elif missing and len(missing) > j.max_skipped_fraction * n:
        why = "pairwise mode compares each answer with its reference" if ps.mode == "pairwise" else \
            "the judge prompt shows a reference"
        problems.append(f"eval.judge.references: {len(missing)} of {n} judged turns have no reference in {source} "
                        f"(first: {', '.join(map(str, missing[:3]))}) but {why}; add them, give eval.judge."
                        "references, or set eval.judge.mode: single")
    return problems


def metrics(cfg: EvalConfig) -> list[str]:
    kind, pairwise = cfg.judge.prompts().kind, cfg.judge.mode == "pairwise"
    names = [] if kind == VERDICT else ["judge_score"]
    names += ["judge_n_scored", "judge_n_skipped", *[f"judge_skipped_{r}" for r in REASONS], "judge_parse_failures",
              "judge_errors", "judge_structured", "judge_requests", "judge_cache_hits", "judge_prompt_tokens",
              "judge_completion_tokens", "judge_cost_usd", "judge_seconds"]
    names += ["judge_ref_score"] if kind == PAIR_SCORES else []
    names += ["judge_win_rate"] if pairwise else []
    names += ["judge_swap_agreement", "judge_swap_pairs"] if pairwise and cfg.judge.swap else []
    return names


# judge_ref_score grades the reference, not the model: a diagnostic like the counts and the cost.
EVALUATORS.register("judge")(Evaluator(enabled=lambda c: c.judge.enabled, metrics=metrics, run=run, check=check,
                                       objectives={"judge_score": "max", "judge_win_rate": "max"},
                                       after=("generate",)))  # it scores generate's predictions
