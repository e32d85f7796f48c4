"""One multiple-choice row -> (question, options, gold answer indices), or the reason it cannot be scored.

Options come from a list of columns / dotted paths ([A, B, C, D], [options.A, ..]), from one path to a
mapping {label: text}, a list of texts or a list of {label, text} (ARC), from `fixed_choices` (yes / no /
maybe), or from 'A. text' lines inside the question (`choices: inline`, dev files of some Chinese exams).
Answers: a label ('B', case-insensitive, also the row's own labels such as ARC's '1'..'4'), a decorated
letter ('(B)', 'B.', 'B. <its text>'), a set of letters in multi-answer sets ('ABD', 'A,C', ['A', 'C']),
a 0- or 1-based index, or the option's text. Shown labels are always A, B, C, ...
"""

from __future__ import annotations

import re
from typing import Any

from trainables.schema.eval import INLINE, MCQLayout

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MAX_MULTI_OPTIONS = 6  # multi-answer scoring compares all 2^n - 1 letter sets

# Why a row is not scored (counted per set; results.csv mcq_<set>_skipped_<reason>).
REASONS = {
    "no_question": "no question text",
    "few_choices": "fewer than 2 non-empty options",
    "too_many_choices": "more options than letters can label (or than multi-answer scoring enumerates)",
    "no_answer": "no answer",
    "answer_not_a_choice": "the answer names no option",
    "answer_text_mismatch": "the answer's letter and text disagree",
    "multi_answer": "the answer names several options in a single-answer set",
    "index_base": "a numeric answer in a set whose answers do not say whether they count from 0 or 1",
    "not_a_row": "the row is not an object",
}

# A letter followed by a closing bracket and/or a separator: 'B.', 'B)', '(B)', '(B).', 'B、', 'B：'.
_MARK = r"[(（\[]?[ \t]*([A-Z])[ \t]*(?:[)）\]][ \t]*[.．、:：]?|[.．、:：])"
_DECORATED = re.compile(r"^[(（\[]?\s*([A-Za-z])\s*(?:(?:[)）\]]\s*[.．、:：]?|[.．、:：])\s*(.*))?$", re.DOTALL)
_MULTI_SEP = re.compile(r"[\s,，、;；/|&和]+")
_INLINE_LINE = re.compile(r"^[ \t]*" + _MARK + r"[ \t]*", re.MULTILINE)
_INLINE_ANY = re.compile(r"(?:^|(?<=\s))" + _MARK + r"[ \t]*")


class Skip(Exception):
    """A row that cannot be scored; args[0] is a key of REASONS."""


def dotted(row: Any, path: str) -> Any:
    """row['a']['b'] for 'a.b'; a key containing dots is tried whole first; list items by index."""
    if isinstance(row, dict) and path in row:
        return row[path]
    for part in path.split("."):
        if isinstance(row, dict) and part in row:
            row = row[part]
        elif isinstance(row, list) and part.isdigit() and int(part) < len(row):
            row = row[int(part)]
        else:
            return None
    return row


def text(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):  # NaN: an empty cell
        return ""
    if isinstance(v, list):
        return "\n".join(text(x) for x in v if text(x))
    if isinstance(v, dict):  # PubMedQA-like {contexts: [..], labels: [..]}: the texts
        return text(v.get("contexts") or v.get("text") or list(v.values()))
    return str(v).strip()


def norm(s: str) -> str:
    """Text compared loosely: case, spaces and trailing punctuation do not matter."""
    return " ".join(s.split()).strip(".。．").strip().lower()


def _pair(i: int, c: Any) -> tuple[str, str]:
    if isinstance(c, dict):  # ARC {label, text}; also {key, value}
        label = text(c.get("label", c.get("key", c.get("id"))))
        return label or LETTERS[i % 26], text(c.get("text", c.get("value", c.get("content"))))
    return LETTERS[i % 26], text(c)


def split_inline(question: str) -> tuple[str, list[tuple[str, str]]]:
    """'Q?\\nA. x\\nB. y' -> ('Q?', [('A', 'x'), ('B', 'y')]): option markers A, B, C... in order, on their own
    lines or, failing that, anywhere after a space."""
    for pattern in (_INLINE_LINE, _INLINE_ANY):
        marks, want = [], 0
        for m in pattern.finditer(question):
            if m.group(1) == LETTERS[want]:
                marks.append(m)
                want += 1
        if len(marks) >= 2:
            pairs = [(m.group(1), question[m.end(): marks[j + 1].start() if j + 1 < len(marks) else None].strip())
                     for j, m in enumerate(marks)]
            return question[: marks[0].start()].strip(), pairs
    return question, []


def options(row: dict[str, Any], layout: MCQLayout, question: str) -> tuple[str, list[tuple[str, str]]]:
    """(question, [(the row's label, text), ...]) with empty options dropped (IDEAFinBench CFA's empty D)."""
    spec = layout.choices
    if layout.fixed_choices is not None:
        pairs = [(LETTERS[i], c) for i, c in enumerate(layout.fixed_choices)]
    elif spec == INLINE:
        question, pairs = split_inline(question)
    elif isinstance(spec, list):
        pairs = [(LETTERS[i], text(dotted(row, col))) for i, col in enumerate(spec)]
    else:
        raw = dotted(row, spec)
        if isinstance(raw, dict):  # {"A": "text", ...}: the keys are the labels
            pairs = [(text(k), text(v)) for k, v in raw.items()]
        elif isinstance(raw, list):
            pairs = [_pair(i, c) for i, c in enumerate(raw)]
        else:
            pairs = []
    return question, [(lab, t) for lab, t in pairs if t]


def _letters(s: str, labels: list[str]) -> list[int] | None:
    """'ABD' / 'A,B,D' / 'A、B' -> indices; None when it is not a set of the row's letter labels."""
    parts = [p for p in _MULTI_SEP.split(s.strip()) if p]
    chars = [c for p in parts for c in p] if all(p.isalpha() and p.isascii() for p in parts) else []
    upper = [lab.upper() for lab in labels]
    if not chars or any(c.upper() not in upper for c in chars) or len(set(chars)) != len(chars):
        return None
    return sorted(upper.index(c.upper()) for c in chars)


def _by_text(s: str, texts: list[str]) -> int | None:
    hits = [j for j, t in enumerate(texts) if norm(t) == norm(s)]
    return hits[0] if len(hits) == 1 else None


def _bool_text(v: bool, texts: list[str]) -> int | None:
    for word in (("yes", "true") if v else ("no", "false")):
        if (j := _by_text(word, texts)) is not None:
            return j
    return None


def _index(v: Any) -> int | None:
    s = text(v)
    return int(float(s)) if re.fullmatch(r"-?\d+(\.0)?", s) else None


def answer_indices(raw: Any, labels: list[str], texts: list[str], kind: str, base: int | str | None,
                   multi: bool) -> list[int]:
    """Gold option indices of one row; raises Skip(reason). `base`: how numeric answers read under
    answer_kind auto (numeric_reading: 0, 1, 'text', or None = undecided, a numeric answer is then unusable)."""
    if isinstance(raw, list):
        found = _letters(",".join(text(x) for x in raw), labels) if kind in ("auto", "letter") else None
        if found is None:
            raise Skip("answer_not_a_choice" if raw else "no_answer")
        return _one_or_many(found, multi)
    if isinstance(raw, bool):
        j = _bool_text(raw, texts)
        if j is None:
            raise Skip("answer_not_a_choice")
        return [j]
    s = text(raw)
    if not s:
        raise Skip("no_answer")
    upper = [lab.upper() for lab in labels]
    if kind in ("auto", "letter") and s.upper() in upper:
        return [upper.index(s.upper())]
    if kind in ("index", "index1") or (kind == "auto" and _index(s) is not None and base != "text"):
        return [_by_index(s, kind, base, len(labels))]
    if kind in ("auto", "text") and (j := _by_text(s, texts)) is not None:
        return [j]
    if kind == "text":
        raise Skip("answer_not_a_choice")
    return _decorated_or_set(s, upper, texts, multi)


def _by_index(s: str, kind: str, base: int | str | None, n_options: int) -> int:
    """A numeric answer as an option index: 0-based (index), 1-based (index1), or as numeric_reading decided."""
    i = _index(s)
    if i is None:
        raise Skip("answer_not_a_choice")
    b = {"index": 0, "index1": 1}.get(kind, base)
    if b is None:
        raise Skip("index_base")
    if not 0 <= i - b < n_options:
        raise Skip("answer_not_a_choice")
    return i - b


def _decorated_or_set(s: str, upper: list[str], texts: list[str], multi: bool) -> list[int]:
    """'B', '(B)', 'B. <its text>' -> [1]; 'ABD', 'A,C', 'B、C' -> a set of letters."""
    m = _DECORATED.match(s)
    letter = m.group(1).upper() if m and m.group(1).upper() in upper else None
    if letter is not None:
        j, rest = upper.index(letter), (m.group(2) or "").strip()
        if not rest or norm(rest) == norm(texts[j]) or norm(texts[j]).startswith(norm(rest)):
            return [j]
    found = _letters(s, upper)
    if found is not None:
        return _one_or_many(found, multi)
    raise Skip("answer_text_mismatch" if letter is not None else "answer_not_a_choice")  # 'B. <another's text>'


def _one_or_many(found: list[int], multi: bool) -> list[int]:
    if len(found) > 1 and not multi:
        raise Skip("multi_answer")
    return found


def numeric_reading(rows: list[tuple[Any, list[str]]]) -> int | str | None:
    """How a set's numeric answers read, decided once from (answer, option texts) over all its rows:
    'text' when every numeric answer is the text of exactly one of its options; else 0 or 1, the index
    base: a 0 means 0-based, an answer equal to its number of options 1-based; neither (or both): None."""
    nums = [(i, a, texts) for a, texts in rows if (i := _index(a)) is not None and not isinstance(a, bool)]
    if not nums:
        return None
    if all(_by_text(text(a), texts) is not None for _, a, texts in nums):
        return "text"
    zero, top = any(i == 0 for i, _, _ in nums), any(i == len(texts) for i, _, texts in nums)
    return 0 if zero and not top else 1 if top and not zero else None
