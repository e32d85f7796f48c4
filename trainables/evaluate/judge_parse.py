"""Reading a verdict out of a judge's reply: a schema-constrained JSON object first, the text forms after.

Kinds (judge_prompts.OUTPUT_FORMATS):
  [[rating]]             one 1-10 score: {"rating": 7}, [[7]], "Rating: [[7.5]]", "Score: 6", "4/10"
  [[rating_a,rating_b]]  two 1-10 scores, A first: {"score_a": 8, "score_b": 6}, [[8, 6]], "8 6" on the
                         first line, "Assistant A: 8 ... Assistant B: 6" (also 1 / 2 as the labels)
  [[A]]                  which answer is better: {"verdict": "A"}, [[A]] / [[B]] / [[C]] (C = tie); a reply
                         naming two different verdicts (an echo of the instructions) is not read
A reply that is a JSON object is read by the schema's keys only (one cut short by max_tokens, or of
another shape, holds no verdict: a cut "1" may have been "10").
"""

from __future__ import annotations

import json
import re
from typing import Any

from trainables.evaluate.judge_prompts import PAIR_SCORES, RATING, VERDICT

_NUM = r"(\d+(?:\.\d+)?)"
_OUT_OF_TEN = re.compile(r"\s*/\s*10\b|\s+out\s+of\s+10\b", re.IGNORECASE)
_LABEL = re.compile(r"assistant\s*[12ab]\b\s*('s)?", re.IGNORECASE)
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


def _score(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if 0 <= v <= 10 else None


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip().strip("*#`>- ").strip()
        if line:
            return line
    return ""


def parse_pair(text: str | None) -> tuple[float, float] | None:
    """Two 1-10 scores: [[a, b]], the first line's two numbers, else 'Assistant A ... N' / 'Assistant B ... M'."""
    if not text:
        return None
    m = re.search(r"\[\[\s*" + _NUM + r"\s*,\s*" + _NUM + r"\s*\]\]", text)
    if m and _score(m.group(1)) is not None and _score(m.group(2)) is not None:
        return _score(m.group(1)), _score(m.group(2))  # type: ignore[return-value]
    line = _OUT_OF_TEN.sub("", _LABEL.sub(" ", _first_line(text)))
    nums = re.findall(_NUM, line)
    if len(nums) == 2:
        a, b = _score(nums[0]), _score(nums[1])
        if a is not None and b is not None:
            return a, b
    labelled = []
    for k in ("[1a]", "[2b]"):
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


def parse_ab(text: str | None) -> str | None:
    """'A', 'B' or 'C' (tie) from [[A]] / [[B]] / [[C]] ([[tie]] too); None when absent or contradictory."""
    if not text:
        return None
    found = {("C" if v.lower() == "tie" else v.upper())
             for v in re.findall(r"\[\[\s*([ABC]|tie)\s*\]\]", text, re.IGNORECASE)}
    return found.pop() if len(found) == 1 else None


def _json_verdict(kind: str, obj: dict) -> Any:
    if kind == RATING:
        return _score(obj.get("rating"))
    if kind == PAIR_SCORES:
        a, b = _score(obj.get("score_a")), _score(obj.get("score_b"))
        return None if a is None or b is None else (a, b)
    v = obj.get("verdict")
    return v.upper() if isinstance(v, str) and v.upper() in ("A", "B", "C") else None


def parse_verdict(kind: str, text: str | None) -> Any:
    """The verdict of a reply (float, (float, float) or 'A'/'B'/'C' by kind), or None when unreadable."""
    if not text:
        return None
    body = _FENCE.sub("", text.strip())
    if body.startswith("{"):  # a JSON reply is read as JSON only: cut short or another shape is no verdict
        try:
            obj = json.loads(body)
        except ValueError:
            return None
        return _json_verdict(kind, obj) if isinstance(obj, dict) else None
    return {RATING: parse_single, PAIR_SCORES: parse_pair, VERDICT: parse_ab}[kind](text)
