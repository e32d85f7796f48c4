"""Generation on a prompt set with the configured decoding settings, batched with left padding.

A question of several turns (MT-bench's question.jsonl) is answered turn by turn, the model's own
earlier answers in its context.

Writes into the trial dir:
  pred.json          {id: {"input": [messages], "output": str}}   (the homework's shape; several turns: the
                     conversation up to the last turn, and the answer to it)
  generations.jsonl  one row per prompt: id, input, output, reference, new_tokens, decoding (several turns:
                     turns, outputs, references; unanswered_turns when the context ran out)
Metrics: gen_n (questions), gen_answers (answered turns), gen_n_skipped / gen_skipped_too_long (turns left
unanswered: the conversation no longer fits the model's context), gen_seconds, gen_new_tokens_mean (per
answer), gen_empty. More unanswered turns than eval.generate.max_skipped_fraction, or none answered, is an
EvalInputError. The outputs are handed to the judge.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from trainables.data.tokenize import prompt_ids
from trainables.evaluate import EVALUATORS, EvalContext, EvalInputError, Evaluator
from trainables.evaluate.answers import write_answers
from trainables.evaluate.common import batches, icl_messages, model_device, pad_id, skipped_problem
from trainables.evaluate.prompts import PromptRow, load_prompts
from trainables.paths import atomic_write_text

if TYPE_CHECKING:
    from trainables.schema.eval import EvalConfig, GenerateConfig


def decoding_kwargs(g: GenerateConfig) -> dict[str, Any]:
    """generate() arguments; sampling knobs only when sampling (greedy would warn about them)."""
    kw: dict[str, Any] = {"max_new_tokens": g.max_new_tokens, "num_beams": g.num_beams,
                          "repetition_penalty": g.repetition_penalty, "do_sample": g.temperature > 0}
    if g.temperature > 0:
        kw.update(temperature=g.temperature, top_k=g.top_k, top_p=g.top_p)
    return kw


def build_messages(row: PromptRow, icl: list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    msgs = list(row.messages)
    head: list[dict[str, str]] = []
    if msgs and msgs[0]["role"] == "system":
        head, msgs = [msgs[0]], msgs[1:]
    elif system:
        head = [{"role": "system", "content": system}]
    return head + icl + msgs


def _generate(model: Any, tokenizer: Any, prompts: list[list[int]], g: GenerateConfig,
              seed: int) -> list[tuple[str, int]]:
    """(text, new tokens) per prompt, in input order: left-padded batches of similar lengths."""
    import torch

    pad = pad_id(tokenizer)
    dev = model_device(model)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths: less padding
    out: list[tuple[str, int]] = [("", 0)] * len(prompts)
    for b, idx in enumerate(batches(order, g.batch_size)):
        width = max(len(prompts[i]) for i in idx)
        # Left padding: every prompt ends at the same column, so new tokens start together.
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[r, width - len(prompts[i]):] = 1
        torch.manual_seed(seed + b)  # per batch: a rerun with the same config samples the same text
        with torch.no_grad():
            seqs = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), pad_token_id=pad,
                                  eos_token_id=tokenizer.eos_token_id, **decoding_kwargs(g))
        for r, i in enumerate(idx):
            new = seqs[r, width:].tolist()
            # A row that stopped early is padded to the batch's longest: count up to its first stop token.
            n_new = next((j for j, t in enumerate(new) if t in (pad, tokenizer.eos_token_id)), len(new))
            out[i] = (answer_text(tokenizer, new[:n_new]), n_new)
    return out


def answer_text(tokenizer: Any, ids: list[int]) -> str:
    """The answer's text. Byte-level BPE spells a CJK character over 2-3 tokens, so an answer cut by
    max_new_tokens can end half-way through one: that half is dropped rather than written as U+FFFD
    (classical_zh's private-test answers ended in it, 2026-12-02)."""
    return tokenizer.decode(ids, skip_special_tokens=True).strip().rstrip("\ufffd").rstrip()


def context_limit(model: Any) -> int | None:
    """Positions the model can attend over (None when its config does not say)."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return n if isinstance(n, int) and n > 0 else None


def _record(row: PromptRow, answers: list[str], new_tokens: int) -> dict[str, Any]:
    rec = {"id": row.id, "input": row.messages, "reference": row.reference,
           "output": answers[0] if answers else "", "new_tokens": new_tokens}
    if row.turns > 1:
        rec.update(turns=[row.messages[-1]["content"], *row.later_turns], outputs=answers,
                   references=row.references())
    if len(answers) < row.turns:
        rec["unanswered_turns"] = row.turns - len(answers)
    return rec


def generate_rows(model: Any, tokenizer: Any, rows: list[PromptRow], g: GenerateConfig,
                  icl: list[dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """One dict per row (input order): id, input, output, reference, new_tokens; a question of several
    turns is answered turn by turn with the model's own earlier answers in its context (turns, outputs,
    references). A turn whose prompt + max_new_tokens exceeds the model's context is not answered, nor
    are the turns after it (unanswered_turns)."""
    convs = [build_messages(r, icl or [], g.system) for r in rows]
    answers: list[list[str]] = [[] for _ in rows]
    new_tokens = [0] * len(rows)
    limit = context_limit(model)
    for t in range(max((r.turns for r in rows), default=0)):
        todo = [i for i, r in enumerate(rows) if r.turns > t and len(answers[i]) == t]
        if t:
            for i in todo:
                convs[i] += [{"role": "assistant", "content": answers[i][-1]},
                             {"role": "user", "content": rows[i].later_turns[t - 1]}]
        ids = {i: prompt_ids(tokenizer, convs[i]) for i in todo}
        fits = [i for i in todo if limit is None or len(ids[i]) + g.max_new_tokens <= limit]
        # Turn 1 keeps the seeds of single-turn generation; later turns draw from their own.
        for i, (text, n) in zip(fits, _generate(model, tokenizer, [ids[i] for i in fits], g, g.seed + 1000 * t),
                                strict=True):
            answers[i].append(text)
            new_tokens[i] += n
    return [_record(r, answers[i], new_tokens[i]) for i, r in enumerate(rows)]


def _pred(rec: dict[str, Any]) -> dict[str, Any]:
    """pred.json's entry: the conversation up to the last answered turn, and that answer."""
    outputs = rec.get("outputs")
    if not outputs or len(outputs) < 2:
        return {"input": rec["input"], "output": rec["output"]}
    conv = list(rec["input"])
    for answer, turn in zip(outputs[:-1], rec["turns"][1:], strict=False):
        conv += [{"role": "assistant", "content": answer}, {"role": "user", "content": turn}]
    return {"input": conv, "output": outputs[-1]}


def _metrics(gens: list[dict[str, Any]], seconds: float) -> dict[str, float]:
    answers = [a for r in gens for a in (r.get("outputs") or ([r["output"]] if "unanswered_turns" not in r else []))]
    unanswered = sum(r.get("unanswered_turns", 0) for r in gens)
    return {
        "gen_n": float(len(gens)),
        "gen_answers": float(len(answers)),
        "gen_n_skipped": float(unanswered),
        "gen_skipped_too_long": float(unanswered),
        "gen_seconds": seconds,
        "gen_new_tokens_mean": sum(r["new_tokens"] for r in gens) / len(answers) if answers else 0.0,
        "gen_empty": float(sum(not a for a in answers)),
    }


def run(ctx: EvalContext) -> dict[str, float]:
    cfg = ctx.cfg
    g = cfg.generate
    assert g.data is not None
    try:
        rows = load_prompts(g.data, limit=g.limit)
    except ValueError as e:
        raise EvalInputError(str(e)) from None
    icl = icl_messages(ctx.train_pool, cfg.icl_shots, cfg.icl_seed)
    t0 = time.perf_counter()
    gens = generate_rows(ctx.model, ctx.tokenizer, rows, g, icl)
    seconds = time.perf_counter() - t0
    decoding = g.model_dump(exclude={"data", "limit", "batch_size", "max_skipped_fraction", "answers_key"})
    pred = {r["id"]: _pred(r) for r in gens}
    atomic_write_text(ctx.trial_dir / "pred.json", json.dumps(pred, ensure_ascii=False, indent=1))
    atomic_write_text(ctx.trial_dir / "generations.jsonl",
                      "".join(json.dumps({**r, "decoding": decoding}, ensure_ascii=False) + "\n" for r in gens))
    if g.answers_key:  # the deliverable a course grades; the best trial's is copied up by harness.recipe
        write_answers(ctx.trial_dir, gens, g.answers_key)
    ctx.shared["generations"] = gens
    m = _metrics(gens, seconds)
    total = int(m["gen_answers"] + m["gen_n_skipped"])
    limit = context_limit(ctx.model)
    problem = skipped_problem("eval.generate", "turns", total, {"too_long": int(m["gen_n_skipped"])},
                              g.max_skipped_fraction,
                              {"too_long": f"the conversation and eval.generate.max_new_tokens ({g.max_new_tokens}) "
                                           f"exceed the model's context ({limit} tokens): lower max_new_tokens or "
                                           "eval.icl_shots"}, done="answered")
    if problem:
        raise EvalInputError(problem)
    return m


def check(cfg: EvalConfig) -> list[str]:
    """The prompt file loads (every row fits a layout); the driver's preflight and each trial's start."""
    try:
        load_prompts(cfg.generate.data or "", limit=cfg.generate.limit)
    except ValueError as e:
        return [str(e)]
    return []


def metrics(cfg: EvalConfig) -> list[str]:
    return ["gen_n", "gen_answers", "gen_n_skipped", "gen_skipped_too_long", "gen_seconds", "gen_new_tokens_mean",
            "gen_empty"]


EVALUATORS.register("generate")(Evaluator(enabled=lambda c: bool(c.generate.data), metrics=metrics, run=run,
                                          check=check))  # counts and times only: the judge grades these outputs
