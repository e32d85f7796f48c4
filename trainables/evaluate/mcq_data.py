"""A generic multiple-choice loader driven by MCQSet columns (no per-benchmark code).

Handles the layouts in ../shared/data/mcq: one CSV per subject (MMLU: choice0..3 + index answer;
CMMLU/FinEval/IDEAFinBench: A-D + letter answer, IDEAFinBench CFA with D empty) and nested JSONL
(ARC: question.stem, question.choices[{label, text}], answerKey, sometimes numeric labels).
Rows whose answer names no single choice (multi-answer 'ABD', missing key) are skipped and counted.
"""

from __future__ import annotations

import csv
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.data.formats import read_rows, resolve_data_path
from trainables.evaluate.config import MCQSet

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SPLIT_SUFFIX = re.compile(r"[_-](test|val|dev|train|validation)$", re.IGNORECASE)
_SUFFIXES = (".csv", ".json", ".jsonl")


@dataclass
class MCQItem:
    id: str
    subject: str
    question: str
    labels: list[str]   # shown letters, e.g. ["A", "B", "C"] (empty choices dropped)
    choices: list[str]
    answer: int          # index into choices


def subject_of(file: Path) -> str:
    """`abstract_algebra_test.csv` -> `abstract_algebra`; `ARC-Challenge-Dev.jsonl` -> `ARC-Challenge`."""
    return _SPLIT_SUFFIX.sub("", file.stem)


def _files(path: str, field: str) -> list[Path]:
    root = resolve_data_path(path, field)
    if root.is_file():
        return [root]
    return sorted(f for f in root.iterdir() if f.suffix.lower() in _SUFFIXES and not f.name.startswith("."))


def _rows(file: Path) -> list[dict[str, Any]]:
    if file.suffix.lower() == ".csv":
        # utf-8-sig: some exports start with a BOM that would otherwise stick to the first header.
        with file.open(encoding="utf-8-sig", newline="") as f:
            return list(csv.DictReader(f))
    return read_rows(file)


def dotted(row: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(row, dict) or part not in row:
            return None
        row = row[part]
    return row


def _text(v: Any) -> str:
    return "" if v is None else str(v).strip()


def _choices(row: dict[str, Any], spec: list[str] | str) -> list[tuple[str, str]]:
    """(label, text) pairs, empty texts dropped (IDEAFinBench CFA has an empty D)."""
    if isinstance(spec, list):
        pairs = [(LETTERS[i], _text(row.get(col))) for i, col in enumerate(spec)]
    else:
        raw = dotted(row, spec) or []
        pairs = []
        for i, c in enumerate(raw):
            if isinstance(c, dict):
                pairs.append((_text(c.get("label")) or LETTERS[i], _text(c.get("text"))))
            else:
                pairs.append((LETTERS[i], _text(c)))
    return [(lab, txt) for lab, txt in pairs if txt]


def _answer_index(raw: Any, labels: list[str], kind: str) -> int | None:
    s = _text(raw)
    if not s:
        return None
    if kind in ("auto", "letter") and s.upper() in [lab.upper() for lab in labels]:
        return [lab.upper() for lab in labels].index(s.upper())
    if kind in ("auto", "index") and re.fullmatch(r"\d+(\.0)?", s):
        i = int(float(s))
        return i if 0 <= i < len(labels) else None
    return None  # multi-letter answers, letters of dropped choices, junk


def load_items(spec: MCQSet, dev: bool = False) -> tuple[list[MCQItem], int]:
    """All usable items of the test (or dev) split in file order, and the number skipped."""
    path = spec.dev if dev else spec.path
    assert path is not None
    items: list[MCQItem] = []
    skipped = 0
    for file in _files(path, f"eval.mcq.{spec.name}.{'dev' if dev else 'path'}"):
        subject = subject_of(file)
        if spec.subjects and not dev and subject not in spec.subjects:
            continue
        for i, row in enumerate(_rows(file)):
            pairs = _choices(row, spec.choices)
            labels = [lab for lab, _ in pairs]
            ans = _answer_index(dotted(row, spec.answer), labels, spec.answer_kind)
            question = _text(dotted(row, spec.question))
            if ans is None or len(pairs) < 2 or not question:
                skipped += 1
                continue
            rid = _text(row.get("id")) or _text(row.get("")) or str(i)
            items.append(MCQItem(f"{subject}/{rid}", subject, question, labels, [t for _, t in pairs], ans))
    return items, skipped


def sample_per_subject(items: list[MCQItem], n: int | None, seed: int) -> list[MCQItem]:
    """n questions per subject, drawn with a per-subject seed (adding a subject changes no other draw)."""
    if n is None:
        return items
    by_subject: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_subject.setdefault(it.subject, []).append(i)
    keep: set[int] = set()
    for subject, idx in by_subject.items():
        keep.update(idx if len(idx) <= n else random.Random(f"{seed}:{subject}").sample(idx, n))
    return [it for i, it in enumerate(items) if i in keep]


def exemplars_by_subject(dev_items: list[MCQItem], k: int) -> dict[str, list[MCQItem]]:
    """First k dev items of each subject (the usual MMLU k-shot convention); key '*' = all subjects."""
    out: dict[str, list[MCQItem]] = {}
    for it in dev_items:
        out.setdefault(it.subject, []).append(it)
    out = {s: v[:k] for s, v in out.items()}
    out["*"] = dev_items[:k]
    return out
