"""Judge prompt templates and tolerant score parsing.

Templates are plain text with {placeholders}; only the known names below are substituted, so a
custom template may contain other braces (JSON examples) and answers may contain anything.
"""

from __future__ import annotations

import re

SYSTEM = "You are a careful, impartial assistant that grades the quality of answers to user questions."

PAIRWISE = """[Question]
{question}

[The Start of Assistant 1's Answer]
{answer_1}
[The End of Assistant 1's Answer]

[The Start of Assistant 2's Answer]
{answer_2}
[The End of Assistant 2's Answer]

[Instructions]
Compare the two answers to the question above. Judge how helpful, relevant, accurate and detailed
each one is, and give each assistant one overall score from 1 to 10 (higher is better).
On the FIRST line write only the two scores, Assistant 1 first, separated by a space (for example: 7 5).
Then, from the second line on, explain your judgement briefly. The order in which the answers appear
must not influence your scores, nor must their length."""

SINGLE = """[Question]
{question}

[The Start of the Answer]
{answer}
[The End of the Answer]

[Instructions]
Rate how helpful, relevant, accurate and detailed the answer above is, on a scale from 1 to 10
(higher is better). On the FIRST line write only "Rating: N" with N an integer from 1 to 10.
Then explain your rating briefly."""

SINGLE_REF = """[Question]
{question}

[Reference Answer]
{reference}

[The Start of the Answer]
{answer}
[The End of the Answer]

[Instructions]
Using the reference answer as a guide to what a correct answer contains, rate how helpful, relevant,
accurate and detailed the answer above is, on a scale from 1 to 10 (higher is better).
On the FIRST line write only "Rating: N" with N an integer from 1 to 10. Then explain briefly."""

PLACEHOLDERS = ("question", "answer", "answer_1", "answer_2", "reference")
_FIELD = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
REQUIRED = {"pairwise": {"question", "answer_1", "answer_2"}, "single": {"question", "answer"}}


def check_template(text: str, mode: str | None = None) -> None:
    """Raise ValueError unless the template has the placeholders its mode needs."""
    found = set(_FIELD.findall(text))
    modes = [mode] if mode else list(REQUIRED)
    if not any(REQUIRED[m] <= found for m in modes):
        need = " or ".join("{" + "}, {".join(sorted(REQUIRED[m])) + "}" for m in modes)
        raise ValueError(f"judge template must contain {need} (found: {sorted(found) or 'none'})")


def fill(template: str, **values: str) -> str:
    """One pass: text substituted in is never scanned again (answers may contain '{answer}')."""
    return _FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), template)


_NUM = r"(\d+(?:\.\d+)?)"
_OUT_OF_TEN = re.compile(r"\s*/\s*10\b|\s+out\s+of\s+10\b", re.IGNORECASE)
_LABEL = re.compile(r"assistant\s*[12]\b\s*('s)?", re.IGNORECASE)


def _score(x: str) -> float | None:
    v = float(x)
    return v if 0 <= v <= 10 else None


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip().strip("*#`>- ").strip()
        if line:
            return line
    return ""


def parse_pair(text: str | None) -> tuple[float, float] | None:
    """Two 1-10 scores: the first line's two numbers, else 'Assistant 1 ... N' / 'Assistant 2 ... M'."""
    if not text:
        return None
    line = _OUT_OF_TEN.sub("", _LABEL.sub(" ", _first_line(text)))
    nums = re.findall(_NUM, line)
    if len(nums) == 2:
        a, b = _score(nums[0]), _score(nums[1])
        if a is not None and b is not None:
            return a, b
    labelled = []
    for k in ("1", "2"):
        m = re.search(rf"assistant\s*{k}\b[^0-9\n]{{0,40}}?{_NUM}", _OUT_OF_TEN.sub("", text), re.IGNORECASE)
        labelled.append(_score(m.group(1)) if m else None)
    if labelled[0] is not None and labelled[1] is not None:
        return labelled[0], labelled[1]
    return None


def parse_single(text: str | None) -> float | None:
    """One 1-10 score: [[N]], 'Rating: N' / 'Score: N', 'N/10', or a lone number on the first line."""
    if not text:
        return None
    patterns = (r"\[\[\s*" + _NUM + r"\s*\]\]", r"(?:rating|score)\s*[:：=]?\s*\**\s*" + _NUM, _NUM + r"\s*/\s*10\b")
    for pat in patterns:
        m = re.search(pat, text, re.IGNORECASE)
        if m and _score(m.group(1)) is not None:
            return _score(m.group(1))
    nums = re.findall(_NUM, _first_line(text))
    return _score(nums[0]) if len(nums) == 1 else None
