"""Multiple-choice accuracy by answer log-likelihood, zero- or k-shot (exemplars from the dev split).

The prediction is the choice whose continuation the model finds most likely after the prompt:
  letter     log p(" B" | prompt)                    one forward per question (letters are 1 token)
  text       log p(" <choice text>" | prompt)        one forward per choice
  text_norm  the same divided by the text's characters (no bias towards short choices)
Metrics per set: mcq_<name>_acc (micro), mcq_<name>_macro_acc (mean over subjects), mcq_<name>_n;
over all sets: mcq_acc (micro), mcq_macro_acc. Per-subject numbers and every prediction go to
<trial_dir>/mcq_<name>.json.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import TYPE_CHECKING, Any

from trainables.data.tokenize import IGNORE
from trainables.evaluate import EVALUATORS, EvalContext, Evaluator
from trainables.evaluate.common import batches, last_token_logprobs, pad_id, token_logprobs
from trainables.evaluate.mcq_data import MCQItem, exemplars_by_subject, load_items, sample_per_subject
from trainables.paths import atomic_write_text

if TYPE_CHECKING:
    from trainables.evaluate.config import EvalConfig, MCQSet


def _block(it: MCQItem) -> str:
    return it.question + "\n" + "\n".join(f"{lab}. {txt}" for lab, txt in zip(it.labels, it.choices, strict=True))


def build_prompt(tokenizer: Any, it: MCQItem, shots: list[MCQItem], template: str) -> str:
    """The text before the answer. raw: ends with 'Answer:'; chat: ends with the assistant header."""
    head = f"The following are multiple choice questions (with answers) about {it.subject.replace('_', ' ')}.\n\n"
    solved = "".join(f"{_block(s)}\nAnswer: {s.labels[s.answer]}\n\n" for s in shots)
    if template == "raw":
        return head + solved + _block(it) + "\nAnswer:"
    user = head + solved + _block(it) + "\nAnswer with the letter of the correct choice."
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)


def continuations(it: MCQItem, score: str, template: str) -> list[str]:
    # raw prompts end in 'Answer:', so the answer is a new word; the chat header ends in a newline.
    sep = " " if template == "raw" else ""
    return [sep + (lab if score == "letter" else txt) for lab, txt in zip(it.labels, it.choices, strict=True)]


def _ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def choice_scores(model: Any, tokenizer: Any, items: list[MCQItem], prompts: list[str], *, score: str,
                  template: str, batch_size: int, max_len: int) -> list[list[float]]:
    """Log-likelihood score of every choice of every item."""
    pad = pad_id(tokenizer)
    conts = [[_ids(tokenizer, c) for c in continuations(it, score, template)] for it in items]
    ctxs = [_ids(tokenizer, p) for p in prompts]
    out: list[list[float]] = [[] for _ in items]
    single = [i for i in range(len(items)) if all(len(c) == 1 for c in conts[i])]
    multi = sorted(set(range(len(items))) - set(single))
    # Fast path: every choice is one token -> one forward of the prompt, read the next-token distribution.
    order = sorted(single, key=lambda i: len(ctxs[i]))
    for idx in batches(order, batch_size):
        logp = last_token_logprobs(model, [ctxs[i][-max_len:] for i in idx], pad)
        for row, i in enumerate(idx):
            out[i] = [float(logp[row, c[0]]) for c in conts[i]]
    # General path: one sequence per (item, choice), only the continuation tokens are scored.
    seqs: list[tuple[int, int, list[int], list[int]]] = []
    for i in multi:
        out[i] = [0.0] * len(conts[i])
        for j, c in enumerate(conts[i]):
            ctx = ctxs[i][-max(1, max_len - len(c)):]
            seqs.append((i, j, ctx + c, [IGNORE] * len(ctx) + c))
    seqs.sort(key=lambda s: len(s[2]))
    for chunk in batches(seqs, batch_size):
        res = token_logprobs(model, [(ids, lab) for _, _, ids, lab in chunk], pad)
        for (i, j, _, _), (lp, _) in zip(chunk, res, strict=True):
            out[i][j] = lp
    if score == "text_norm":
        out = [[s / max(1, len(t.strip())) for s, t in zip(sc, continuations(it, score, template), strict=True)]
               for sc, it in zip(out, items, strict=True)]
    return out


def _argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=lambda j: xs[j])


def evaluate_set(model: Any, tokenizer: Any, spec: MCQSet, *, batch_size: int, max_len: int) -> dict[str, Any]:
    """Score one MCQ set; returns {'acc', 'macro_acc', 'n', 'skipped', 'subjects', 'predictions'}."""
    items, skipped = load_items(spec)
    items = sample_per_subject(items, spec.n_per_subject, spec.seed)
    shots = exemplars_by_subject(load_items(spec, dev=True)[0], spec.shots) if spec.shots else {}
    prompts = [build_prompt(tokenizer, it, shots.get(it.subject, shots.get("*", [])), spec.template)
               for it in items]
    scores = choice_scores(model, tokenizer, items, prompts, score=spec.score, template=spec.template,
                           batch_size=batch_size, max_len=max_len)
    preds = [_argmax(s) for s in scores]
    per_subject: dict[str, list[int]] = {}
    for it, p in zip(items, preds, strict=True):
        per_subject.setdefault(it.subject, []).append(int(p == it.answer))
    subjects = {s: statistics.fmean(v) for s, v in sorted(per_subject.items())}
    n = len(items)
    return {
        "acc": sum(sum(v) for v in per_subject.values()) / n if n else float("nan"),
        "macro_acc": statistics.fmean(subjects.values()) if subjects else float("nan"),
        "n": n,
        "skipped": skipped,
        "subjects": subjects,
        "predictions": [{"id": it.id, "pred": it.labels[p], "answer": it.labels[it.answer], "scores": s}
                        for it, p, s in zip(items, preds, scores, strict=True)],
    }


def run(ctx: EvalContext) -> dict[str, float]:
    cfg = ctx.cfg
    metrics: dict[str, float] = {}
    correct = total = 0
    macros = []
    t0 = time.perf_counter()
    for spec in cfg.mcq_sets():
        res = evaluate_set(ctx.model, ctx.tokenizer, spec, batch_size=cfg.batch_size, max_len=cfg.max_len)
        metrics[f"mcq_{spec.name}_acc"] = res["acc"]
        metrics[f"mcq_{spec.name}_macro_acc"] = res["macro_acc"]
        metrics[f"mcq_{spec.name}_n"] = float(res["n"])
        correct += round(res["acc"] * res["n"]) if res["n"] else 0
        total += res["n"]
        macros.append(res["macro_acc"])
        atomic_write_text(ctx.trial_dir / f"mcq_{spec.name}.json",
                          json.dumps({"shots": spec.shots, **res}, ensure_ascii=False, indent=1))
    metrics["mcq_acc"] = correct / total if total else float("nan")
    metrics["mcq_macro_acc"] = statistics.fmean(macros) if macros else float("nan")
    metrics["mcq_seconds"] = time.perf_counter() - t0
    return metrics


def metrics(cfg: EvalConfig) -> list[str]:
    per_set = [f"mcq_{m.name}_{k}" for m in cfg.mcq for k in ("acc", "macro_acc", "n")]
    return per_set + ["mcq_acc", "mcq_macro_acc", "mcq_seconds"]


EVALUATORS.register("mcq")(Evaluator(enabled=lambda c: bool(c.mcq), metrics=metrics, run=run,
                                     objectives={"mcq_acc": "max", "mcq_macro_acc": "max", "mcq_*_acc": "max"}))
