"""Multiple-choice accuracy by answer log-likelihood, zero- or k-shot.

The prediction is the candidate answer whose continuation the model finds most likely after the prompt:
  letter     log p(" B" | prompt)                    one forward per question when letters are 1 token
  text       log p(" <choice text>" | prompt)        one forward per choice
  text_norm  the same divided by the text's characters (no bias towards short choices)
A multi-answer set (multi: true) scores every non-empty set of letters (" ABD") the same way and
predicts the most likely one.
Metrics per set (docs/DESIGN.md, results.csv contract): single-answer sets mcq_<name>_acc (micro) and
_macro_acc (mean over subjects); multi-answer sets _set_acc (exact set) and _option_f1 (micro F1 over every
(question, option) decision); all sets _n_scored, _n_skipped (+ _skipped_<reason> when not zero), _shots
(exemplars actually in the prompts, mean per question), _top_letter_share (share of the most frequent
prediction), _chance (mean of 1/options, 1/(2^options - 1) for sets). Over single-answer sets: mcq_acc,
mcq_macro_acc. Per-subject numbers and every prediction go to <trial_dir>/mcq_<name>.json.
"""

from __future__ import annotations

import functools
import itertools
import json
import statistics
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from trainables.data.tokenize import IGNORE
from trainables.evaluate import EVALUATORS, EvalContext, EvalInputError, Evaluator
from trainables.evaluate.common import batches, last_token_logprobs, pad_id, token_logprobs
from trainables.evaluate.mcq_data import MCQItem, exemplars_for, prepare
from trainables.paths import atomic_write_text

if TYPE_CHECKING:
    from trainables.schema.eval import EvalConfig, MCQSet


class MCQDataError(EvalInputError):
    """A set that cannot be scored as configured (the same lines the driver's preflight prints)."""


_WORDING = {  # language -> (single header, multi header, answer prefix, chat instruction single, multi)
    "en": ("The following are multiple choice questions (with answers) about {subject}.\n\n",
           "The following are multiple choice questions (with answers) about {subject}. Each question may have "
           "more than one correct choice.\n\n",
           "Answer:", "Answer with the letter of the correct choice.",
           "Answer with the letters of all correct choices."),
    "zh": ("以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n",
           "以下是关于{subject}的多项选择题，请直接给出所有正确答案的选项。\n\n",
           "答案：", "请直接给出正确答案的选项字母。", "请直接给出所有正确答案的选项字母。"),
}


def answer_prefix(spec: MCQSet) -> str:
    return spec.answer_prefix if spec.answer_prefix is not None else _WORDING[spec.language][2]


def _space(prefix: str) -> str:
    """'Answer:' + ' B'; '答案：' + 'B' (a full-width colon needs no space)."""
    return " " if prefix and prefix[-1].isascii() and not prefix[-1].isspace() else ""


def _block(it: MCQItem) -> str:
    lines = "\n".join(f"{lab}. {txt}" for lab, txt in zip(it.labels, it.choices, strict=True))
    return (it.context + "\n" if it.context else "") + it.question + "\n" + lines


def gold(it: MCQItem) -> str:
    return "".join(it.labels[j] for j in it.answers)


def build_prompt(tokenizer: Any, it: MCQItem, shots: list[MCQItem], spec: MCQSet) -> str:
    """The text before the answer. raw: ends with the answer prefix; chat: ends with the assistant header."""
    words = _WORDING[spec.language]
    subject = spec.subject_names.get(it.subject, it.subject.replace("_", " "))
    head = (spec.header if spec.header is not None else words[1 if spec.multi else 0]).replace("{subject}", subject)
    prefix = answer_prefix(spec)
    solved = "".join(f"{_block(s)}\n{prefix}{_space(prefix)}{gold(s)}\n\n" for s in shots)
    if spec.template == "raw":
        return head + solved + _block(it) + "\n" + prefix
    user = head + solved + _block(it) + "\n" + words[4 if spec.multi else 3]
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)


def candidates(it: MCQItem, spec: MCQSet) -> list[tuple[tuple[int, ...], str]]:
    """(option indices, continuation text) of every answer the model can give."""
    sep = _space(answer_prefix(spec)) if spec.template == "raw" else ""  # the chat header ends in a newline
    n = len(it.choices)
    if spec.multi:
        sets = [c for k in range(1, n + 1) for c in itertools.combinations(range(n), k)]
        return [(c, sep + "".join(it.labels[j] for j in c)) for c in sets]
    return [((j,), sep + (it.labels[j] if spec.score == "letter" else it.choices[j])) for j in range(n)]


def _ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def fit_prompts(tokenizer: Any, items: list[MCQItem], pool: dict[str, list[MCQItem]], spec: MCQSet,
                max_len: int) -> tuple[list[list[int]], list[int], int]:
    """Token ids of every prompt, the exemplars each one holds, and how many prompts lost their beginning.
    Exemplars that would not fit in max_len with the longest answer are dropped (last first) rather than cut."""
    ctxs, used, cut = [], [], 0
    for it in items:
        shots = exemplars_for(it, pool, spec.shots)
        room = max_len - max(len(_ids(tokenizer, c)) for _, c in candidates(it, spec))
        ids = _ids(tokenizer, build_prompt(tokenizer, it, shots, spec))
        while shots and len(ids) > room:
            shots = shots[:-1]
            ids = _ids(tokenizer, build_prompt(tokenizer, it, shots, spec))
        cut += len(ids) > room
        ctxs.append(ids)
        used.append(len(shots))
    return ctxs, used, cut


def choice_scores(model: Any, tokenizer: Any, conts: list[list[str]], ctxs: list[list[int]], *, batch_size: int,
                  max_len: int, per_char: bool = False) -> list[list[float]]:
    """Summed log-probability of every continuation after its prompt (per character when per_char)."""
    pad = pad_id(tokenizer)
    cont_ids = [[_ids(tokenizer, c) for c in cs] for cs in conts]
    out: list[list[float]] = [[0.0] * len(cs) for cs in conts]
    single = [i for i in range(len(conts)) if all(len(c) == 1 for c in cont_ids[i])]
    multi = sorted(set(range(len(conts))) - set(single))
    # Fast path: every continuation is one token -> one forward of the prompt, read the next-token distribution.
    for idx in batches(sorted(single, key=lambda i: len(ctxs[i])), batch_size):
        logp = last_token_logprobs(model, [ctxs[i][-max_len:] for i in idx], pad)
        for row, i in enumerate(idx):
            out[i] = [float(logp[row, c[0]]) for c in cont_ids[i]]
    # General path: one sequence per (item, continuation), only the continuation tokens are scored.
    seqs: list[tuple[int, int, list[int], list[int]]] = []
    for i in multi:
        for j, c in enumerate(cont_ids[i]):
            ctx = ctxs[i][-max(1, max_len - len(c)):]
            seqs.append((i, j, ctx + c, [IGNORE] * len(ctx) + c))
    seqs.sort(key=lambda s: len(s[2]))
    for chunk in batches(seqs, batch_size):
        res = token_logprobs(model, [(ids, lab) for _, _, ids, lab in chunk], pad)
        for (i, j, _, _), (lp, _) in zip(chunk, res, strict=True):
            out[i][j] = lp
    if per_char:
        out = [[s / max(1, len(t.strip())) for s, t in zip(sc, cs, strict=True)] for sc, cs in zip(out, conts, strict=True)]
    return out


def _argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=lambda j: xs[j])


def evaluate_set(model: Any, tokenizer: Any, spec: MCQSet, *, batch_size: int, max_len: int) -> dict[str, Any]:
    """Score one MCQ set (spec.shots resolved); raises MCQDataError when it cannot be scored as configured."""
    prep = prepare(spec)
    if prep.problems:
        raise MCQDataError("; ".join(prep.problems))
    spec, items = prep.spec, prep.items
    ctxs, used, cut = fit_prompts(tokenizer, items, prep.pool, spec, max_len)
    cands = [candidates(it, spec) for it in items]
    scores = choice_scores(model, tokenizer, [[c for _, c in cs] for cs in cands], ctxs, batch_size=batch_size,
                           max_len=max_len, per_char=spec.score == "text_norm")
    preds = [cs[_argmax(s)][0] for cs, s in zip(cands, scores, strict=True)]
    return {**summarise(spec, items, preds), "shots_requested": spec.shots, "shots_source": prep.shots_source,
            "shots_used": statistics.fmean(used) if used else 0.0, "n_truncated": cut,
            "n_skipped": prep.test.n_skipped, "skipped": dict(prep.test.skipped),
            "skipped_examples": prep.test.examples, "rows": prep.test.rows,
            "predictions": [{"id": it.id, "pred": "".join(it.labels[j] for j in p), "answer": gold(it),
                             "question": _block(it),  # for a report's case studies
                             "shots": k, "scores": s}
                            for it, p, k, s in zip(items, preds, used, scores, strict=True)]}


def summarise(spec: MCQSet, items: list[MCQItem], preds: list[tuple[int, ...]]) -> dict[str, Any]:
    """Accuracy (exact set), per-subject accuracy, option F1, collapse and chance figures of scored items."""
    per_subject: dict[str, list[int]] = {}
    tp = fp = fn = 0
    for it, p in zip(items, preds, strict=True):
        per_subject.setdefault(it.subject, []).append(int(set(p) == set(it.answers)))
        tp, fp, fn = tp + len(set(p) & set(it.answers)), fp + len(set(p) - set(it.answers)), \
            fn + len(set(it.answers) - set(p))
    subjects = {s: statistics.fmean(v) for s, v in sorted(per_subject.items())}
    n = len(items)
    shown = Counter("".join(it.labels[j] for j in p) for it, p in zip(items, preds, strict=True))
    chance = [1 / (2 ** len(it.choices) - 1) if spec.multi else 1 / len(it.choices) for it in items]
    return {
        "acc": sum(map(sum, per_subject.values())) / n if n else float("nan"),
        "macro_acc": statistics.fmean(subjects.values()) if subjects else float("nan"),
        "option_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan"),
        "n": n,
        "correct": sum(map(sum, per_subject.values())),
        "top_letter_share": shown.most_common(1)[0][1] / n if n else float("nan"),
        "top_letter": shown.most_common(1)[0][0] if n else "",
        "chance": statistics.fmean(chance) if chance else float("nan"),
        "subjects": subjects,
    }


def set_metrics(spec: MCQSet, res: dict[str, Any]) -> dict[str, float]:
    """results.csv columns of one set (module docstring)."""
    p = f"mcq_{spec.name}_"
    quality = {p + "set_acc": res["acc"], p + "option_f1": res["option_f1"]} if spec.multi else \
        {p + "acc": res["acc"], p + "macro_acc": res["macro_acc"]}
    out = {**quality, p + "n_scored": float(res["n"]), p + "n_skipped": float(res["n_skipped"]),
           p + "shots": res["shots_used"], p + "top_letter_share": res["top_letter_share"], p + "chance": res["chance"]}
    out.update({f"{p}skipped_{why}": float(k) for why, k in res["skipped"].items() if k})
    if res["n_truncated"]:
        out[p + "n_truncated"] = float(res["n_truncated"])
    return out


def run(ctx: EvalContext) -> dict[str, float]:
    cfg = ctx.cfg
    metrics: dict[str, float] = {}
    correct = total = 0
    macros = []
    t0 = time.perf_counter()
    for spec in cfg.mcq_sets():
        res = evaluate_set(ctx.model, ctx.tokenizer, spec, batch_size=cfg.batch_size, max_len=cfg.max_len)
        metrics.update(set_metrics(spec, res))
        if not spec.multi:  # multi-answer sets have their own metrics, never mixed into mcq_acc
            correct, total = correct + res["correct"], total + res["n"]
            macros.append(res["macro_acc"])
        print(f"mcq {spec.name}: {res['n']} scored, {res['n_skipped']} skipped"
              f"{' (' + ', '.join(f'{k}x {w}' for w, k in res['skipped'].items()) + ')' if res['n_skipped'] else ''}, "
              f"{res['shots_used']:g}-shot ({spec.shots} asked), {res['n_truncated']} prompts cut", flush=True)
        atomic_write_text(ctx.trial_dir / f"mcq_{spec.name}.json", json.dumps(res, ensure_ascii=False, indent=1))
    if macros:
        metrics["mcq_acc"] = correct / total if total else float("nan")
        metrics["mcq_macro_acc"] = statistics.fmean(macros)
    metrics["mcq_seconds"] = time.perf_counter() - t0
    return metrics


@functools.lru_cache(maxsize=64)
def _problems_of(spec_json: str) -> tuple[str, ...]:
    from trainables.schema.eval import MCQSet

    return tuple(prepare(MCQSet.model_validate_json(spec_json)).problems)


def check(cfg: EvalConfig) -> list[str]:
    """Every MCQ set that cannot be scored as configured (read once per process and setting)."""
    return [p for spec in cfg.mcq_sets() for p in _problems_of(spec.model_dump_json())]


def metrics(cfg: EvalConfig) -> list[str]:
    names = []
    for m in cfg.mcq:
        quality = ("set_acc", "option_f1") if m.multi else ("acc", "macro_acc")
        names += [f"mcq_{m.name}_{k}" for k in (*quality, "n_scored", "n_skipped", "shots", "top_letter_share",
                                                 "chance")]
    overall = ["mcq_acc", "mcq_macro_acc"] if any(not m.multi for m in cfg.mcq) else []
    return names + overall + ["mcq_seconds"]


EVALUATORS.register("mcq")(Evaluator(enabled=lambda c: bool(c.mcq), metrics=metrics, run=run, check=check,
                                     objectives={"mcq_acc": "max", "mcq_macro_acc": "max", "mcq_*_acc": "max",
                                                 "mcq_*_option_f1": "max"}))
