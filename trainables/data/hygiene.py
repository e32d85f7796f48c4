"""Pool hygiene before selection: drop duplicates, drop examples that leak evaluation prompts.

Both steps compare *normalised* text: lower case, punctuation and spacing removed, CJK split into
characters (Chinese has no spaces, so a "word" n-gram there is a character n-gram).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from trainables.data.formats import Example, load_examples

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def normalize(text: str) -> str:
    return " ".join(words(text))


def dedup(examples: list[Example], mode: str) -> tuple[list[Example], dict[str, list[str]]]:
    """Keep the first of each duplicate. exact: identical conversations; normalized: additionally the
    same prompt after normalize() (a re-phrased copy of the same instruction, whatever its answer).
    Returns (kept, {"dup_exact": ids, "dup_normalized": ids})."""
    removed: dict[str, list[str]] = {"dup_exact": [], "dup_normalized": []}
    if mode == "off":
        return examples, removed
    seen_exact: set[tuple] = set()
    seen_prompt: set[str] = set()
    kept = []
    for e in examples:
        key = tuple((m["role"], m["content"]) for m in e.messages)
        if key in seen_exact:
            removed["dup_exact"].append(e.id)
            continue
        seen_exact.add(key)
        if mode == "normalized":
            prompt = normalize(e.prompt_text)
            if prompt and prompt in seen_prompt:
                removed["dup_normalized"].append(e.id)
                continue
            seen_prompt.add(prompt)
        kept.append(e)
    return kept, removed


def _ngrams(tokens: list[str], n: int) -> Iterable[tuple[str, ...]]:
    return zip(*(tokens[i:] for i in range(n)), strict=False)


class Contamination:
    """Evaluation prompts to keep out of training: exact (normalised prompt equality) and any shared
    word n-gram anywhere in the training conversation (GPT-3-style overlap; n=13 by default)."""

    def __init__(self, eval_texts: Iterable[str], n: int):
        self.n = n
        self.exact: set[str] = set()
        self.grams: set[tuple[str, ...]] = set()
        for text in eval_texts:
            tokens = words(text)
            self.exact.add(" ".join(tokens))
            if n:
                self.grams.update(_ngrams(tokens, n))

    def hit(self, example: Example) -> str | None:
        """'exact', 'ngram' or None."""
        if normalize(example.prompt_text) in self.exact:
            return "exact"
        if self.grams:
            for m in example.messages:
                if not self.grams.isdisjoint(_ngrams(words(m["content"]), self.n)):
                    return "ngram"
        return None


def eval_prompt_texts(paths: list[str], fields: dict[str, dict[str, str]] | None = None) -> list[str]:
    """Prompt texts of evaluation files in any of the open-ended test formats (Koala, Vicuna, WizardLM,
    FastChat, Alpaca...); the evaluation code owns that loader, so both read the files the same way.
    A file with a column mapping (`fields`: path -> data.fields-style mapping) is read as the perplexity
    evaluator reads it."""
    from trainables.evaluate.prompts import load_prompts

    texts = []
    for path in paths:
        if (fields or {}).get(path):
            texts += [e.prompt_text for e in load_examples(path, field_name="data.decontaminate", fields=fields[path])]
            continue
        for row in load_prompts(path, field_name="data.decontaminate"):
            texts.append("\n".join([m["content"] for m in row.messages if m["role"] == "user"] + row.later_turns))
    return texts


def decontaminate(
    examples: list[Example], eval_paths: list[str], n: int, fields: dict[str, dict[str, str]] | None = None
) -> tuple[list[Example], dict[str, list[str]]]:
    """Drop training examples that overlap the evaluation prompts. Returns (kept, {"decontam_exact": ids,
    "decontam_ngram": ids})."""
    removed: dict[str, list[str]] = {"decontam_exact": [], "decontam_ngram": []}
    if not eval_paths:
        return examples, removed
    check = Contamination(eval_prompt_texts(eval_paths, fields), n)
    kept = []
    for e in examples:
        why = check.hit(e)
        if why:
            removed[f"decontam_{why}"].append(e.id)
        else:
            kept.append(e)
    return kept, removed
