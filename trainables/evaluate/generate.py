"""Generation on a prompt set with the configured decoding settings, batched with left padding.

Writes into the trial dir:
  pred.json          {id: {"input": [messages], "output": str}}   (the homework's shape)
  generations.jsonl  one row per prompt: id, input, output, reference, new_tokens, decoding
Metrics: gen_n, gen_seconds, gen_new_tokens_mean, gen_empty. The outputs are handed to the judge.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from trainables.data.tokenize import prompt_ids
from trainables.evaluate import EVALUATORS, EvalContext, Evaluator
from trainables.evaluate.common import batches, icl_messages, model_device, pad_id
from trainables.evaluate.prompts import PromptRow, load_prompts
from trainables.paths import atomic_write_text

if TYPE_CHECKING:
    from trainables.evaluate.config import EvalConfig, GenerateConfig


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


def generate_rows(model: Any, tokenizer: Any, rows: list[PromptRow], g: GenerateConfig,
                  icl: list[dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """One dict per row (input order): id, input, output, reference, new_tokens."""
    import torch

    pad = pad_id(tokenizer)
    dev = model_device(model)
    prompts = [prompt_ids(tokenizer, build_messages(r, icl or [], g.system)) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: len(prompts[i]))  # similar lengths: less padding
    out: list[dict[str, Any]] = [{} for _ in rows]
    for b, idx in enumerate(batches(order, g.batch_size)):
        width = max(len(prompts[i]) for i in idx)
        # Left padding: every prompt ends at the same column, so new tokens start together.
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[r, width - len(prompts[i]):] = 1
        torch.manual_seed(g.seed + b)  # per batch: a rerun with the same config samples the same text
        with torch.no_grad():
            seqs = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), pad_token_id=pad,
                                  eos_token_id=tokenizer.eos_token_id, **decoding_kwargs(g))
        for r, i in enumerate(idx):
            new = seqs[r, width:].tolist()
            # A row that stopped early is padded to the batch's longest: count up to its first stop token.
            n_new = next((j for j, t in enumerate(new) if t in (pad, tokenizer.eos_token_id)), len(new))
            out[i] = {"id": rows[i].id, "input": rows[i].messages, "reference": rows[i].reference,
                      "output": tokenizer.decode(new[:n_new], skip_special_tokens=True).strip(),
                      "new_tokens": n_new}
    return out


def run(ctx: EvalContext) -> dict[str, float]:
    cfg = ctx.cfg
    g = cfg.generate
    assert g.data is not None
    rows = load_prompts(g.data, limit=g.limit)
    icl = icl_messages(ctx.train_pool, cfg.icl_shots, cfg.icl_seed)
    t0 = time.perf_counter()
    gens = generate_rows(ctx.model, ctx.tokenizer, rows, g, icl)
    seconds = time.perf_counter() - t0
    decoding = g.model_dump(exclude={"data", "limit", "batch_size"})
    pred = {r["id"]: {"input": r["input"], "output": r["output"]} for r in gens}
    atomic_write_text(ctx.trial_dir / "pred.json", json.dumps(pred, ensure_ascii=False, indent=1))
    atomic_write_text(ctx.trial_dir / "generations.jsonl",
                      "".join(json.dumps({**r, "decoding": decoding}, ensure_ascii=False) + "\n" for r in gens))
    ctx.shared["generations"] = gens
    n = len(gens)
    return {
        "gen_n": float(n),
        "gen_seconds": seconds,
        "gen_new_tokens_mean": sum(r["new_tokens"] for r in gens) / n if n else 0.0,
        "gen_empty": float(sum(not r["output"] for r in gens)),
    }


def metrics(cfg: EvalConfig) -> list[str]:
    return ["gen_n", "gen_seconds", "gen_new_tokens_mean", "gen_empty"]


# Counts and times only: nothing here is an objective (the judge grades these outputs).
EVALUATORS.register("generate")(Evaluator(enabled=lambda c: bool(c.generate.data), metrics=metrics, run=run))
