"""A generic multiple-choice loader driven by an MCQSet's layout (no per-benchmark code), and the checks
that refuse a set before any trial when it cannot be scored as configured.

Files: one CSV/JSON/JSONL per subject in a folder (MMLU, CMMLU, C-Eval, FinEval, IDEAFinBench), or one
file (MedQA, PubMedQA, ARC, MMLU-Pro; subjects from `subject_field`). Rows are parsed by mcq_parse; a row
that cannot be scored is skipped and its reason counted. The driver's preflight
(trainables.evaluate.data_problems) and every trial run the same `prepare(spec)`, so what the preflight
accepts is what the trial scores.
"""

from __future__ import annotations

import csv
import difflib
import functools
import hashlib
import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.data.formats import read_rows, resolve_data_path
from trainables.evaluate.mcq_parse import (
    LETTERS,
    MAX_MULTI_OPTIONS,
    REASONS,
    Skip,
    answer_indices,
    dotted,
    norm,
    numeric_reading,
    options,
    text,
)
from trainables.schema.eval import INLINE, MCQLayout, MCQSet

_SPLIT_SUFFIX = re.compile(r"[_-](test|val|dev|train|validation)$", re.IGNORECASE)
_SUFFIXES = (".csv", ".json", ".jsonl")
_SHOWN_EXAMPLES = 2


@dataclass
class MCQItem:
    id: str
    subject: str
    question: str
    labels: list[str]    # shown letters, e.g. ["A", "B", "C"] (empty options dropped)
    choices: list[str]
    answers: list[int]   # gold option indices: one, or several in a multi-answer set
    context: str = ""

    @property
    def answer(self) -> int:
        return self.answers[0]

    @functools.cached_property
    def key(self) -> str:
        """Content hash: what sampling and the exclusion of the scored question from its exemplars use."""
        raw = json.dumps([self.context, norm(self.question), [norm(c) for c in self.choices]], ensure_ascii=False)
        return hashlib.sha1(raw.encode()).hexdigest()


@dataclass
class Loaded:
    """One split of a set: the scorable items in file order and what happened to the other rows."""

    source: str
    items: list[MCQItem] = field(default_factory=list)
    rows: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> rows
    examples: dict[str, str] = field(default_factory=dict)  # reason -> the first such row, described
    subjects: list[str] = field(default_factory=list)  # every subject of the files (before `subjects`)
    csv: bool = False  # read from CSV files

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def reasons(self) -> str:
        return ", ".join(f"{n}x {why}: {REASONS[why]}" for why, n in self.skipped.most_common())


def subject_of(file: Path) -> str:
    """`abstract_algebra_test.csv` -> `abstract_algebra`; `ARC-Challenge-Dev.jsonl` -> `ARC-Challenge`."""
    return _SPLIT_SUFFIX.sub("", file.stem)


def _files(path: str, field_name: str) -> list[Path]:
    root = resolve_data_path(path, field_name, folder_ok=True)
    if root.is_file():
        return [root]
    return sorted(f for f in root.iterdir() if f.suffix.lower() in _SUFFIXES and not f.name.startswith("."))


def _rows(file: Path, layout: MCQLayout) -> list[Any]:
    if file.suffix.lower() == ".csv":
        # utf-8-sig: some exports start with a BOM that would otherwise stick to the first header.
        with file.open(encoding="utf-8-sig", newline="") as f:
            if layout.csv_columns:  # no header line: every line is a row
                return [dict(zip(layout.csv_columns, line, strict=False)) for line in csv.reader(f)]
            return list(csv.DictReader(f))
    return read_rows(file)


def _blank(row: Any) -> bool:
    """A CSV line of empty cells (IDEAFinBench's strategy_dev.csv ends with two): not a row at all."""
    return isinstance(row, dict) and not any(text(v) for v in row.values())


def _parse(row: Any, layout: MCQLayout, multi: bool) -> tuple[str, str, list[tuple[str, str]]]:
    """(question, context, [(the row's label, text)]) of a row, or Skip."""
    if not isinstance(row, dict):
        raise Skip("not_a_row")
    question, pairs = options(row, layout, text(dotted(row, layout.question)))
    if not question:
        raise Skip("no_question")
    if len(pairs) < 2:
        raise Skip("few_choices")
    if len(pairs) > (MAX_MULTI_OPTIONS if multi else len(LETTERS)):
        raise Skip("too_many_choices")
    return question, text(dotted(row, layout.context)) if layout.context else "", pairs


def _describe(file: Path, i: int, row: Any, layout: MCQLayout) -> str:
    fields = ", ".join(map(str, row)) if isinstance(row, dict) else type(row).__name__
    answer = text(dotted(row, layout.answer))[:40] if isinstance(row, dict) else ""
    return f"{file.name} row {i} (answer {answer!r}; fields: {fields})"


def _skip(out: Loaded, reason: str, file: Path, i: int, row: Any, layout: MCQLayout) -> None:
    out.skipped[reason] += 1
    out.examples.setdefault(reason, _describe(file, i, row, layout))


def _parsed_rows(spec: MCQSet, dev: bool, layout: MCQLayout, out: Loaded) -> list[tuple[Path, int, Any, str, Any]]:
    """The split's rows of the wanted subjects, parsed: (file, row index, row, subject, (question, context,
    pairs)); the subjects seen, the rows read and the skipped ones recorded in `out`."""
    parsed = []
    for file in _files(out.source, f"eval.mcq.{spec.name}.{'dev' if dev else 'path'}"):
        out.csv = out.csv or file.suffix.lower() == ".csv"
        for i, row in enumerate(_rows(file, layout)):
            if _blank(row):
                continue
            subject = text(dotted(row, layout.subject_field)) if layout.subject_field and isinstance(row, dict) \
                else subject_of(file)
            if subject not in out.subjects:
                out.subjects.append(subject)
            if spec.subjects and not dev and subject not in spec.subjects:
                continue
            out.rows += 1
            try:
                parsed.append((file, i, row, subject, _parse(row, layout, spec.multi)))
            except Skip as e:
                _skip(out, e.args[0], file, i, row, layout)
    return parsed


def load_items(spec: MCQSet, dev: bool = False) -> Loaded:
    """Every scorable item of the test (or dev) split in file order, and the skipped rows by reason."""
    path = spec.dev_path if dev else spec.path
    assert path is not None
    layout = spec.layout(dev)
    out = Loaded(source=path)
    parsed = _parsed_rows(spec, dev, layout, out)
    reading = numeric_reading([(dotted(r, layout.answer), [t for _, t in p[2]]) for _, _, r, _, p in parsed]) \
        if layout.answer_kind == "auto" else None
    for file, i, row, subject, (question, context, pairs) in parsed:
        labels, texts = [lab for lab, _ in pairs], [t for _, t in pairs]
        try:
            gold = answer_indices(dotted(row, layout.answer), labels, texts, layout.answer_kind, reading, spec.multi)
        except Skip as e:
            _skip(out, e.args[0], file, i, row, layout)
            continue
        rid = text(row.get("id")) or text(row.get("")) or text(row.get("question_id")) or f"{file.stem}#{i}"
        out.items.append(MCQItem(f"{subject}/{rid}", subject, question, list(LETTERS[: len(pairs)]), texts,
                                 gold, context))
    return out


def sample_per_subject(items: list[MCQItem], n: int | None, seed: int) -> list[MCQItem]:
    """n questions per subject, chosen by a hash of (seed, the question's content): the same questions
    wherever the file lies and whatever its row order; kept in file order."""
    if n is None:
        return items
    by_subject: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_subject.setdefault(it.subject, []).append(i)
    keep: set[int] = set()
    for idx in by_subject.values():
        rank = sorted(idx, key=lambda i: hashlib.sha1(f"{seed}:{items[i].key}".encode()).hexdigest())
        keep.update(rank[:n])
    return [it for i, it in enumerate(items) if i in keep]


def exemplars_for(it: MCQItem, pool: dict[str, list[MCQItem]], k: int) -> list[MCQItem]:
    """The first k exemplars of the item's subject (the usual MMLU k-shot convention), never the item itself."""
    if k <= 0:
        return []
    candidates = (e for e in pool.get(it.subject, pool.get("*", [])) if e.key != it.key)
    return list(itertools.islice(candidates, k))


@dataclass
class Prepared:
    """A set ready to score: the (sampled) items, their exemplar pool, and what stops it from being scored."""

    spec: MCQSet
    test: Loaded
    items: list[MCQItem]
    pool: dict[str, list[MCQItem]]  # subject -> exemplar candidates in order; '*': a one-subject dev file
    shots_source: str
    problems: list[str]


def prepare(spec: MCQSet) -> Prepared:
    """Load, check and sample one set (spec.shots as EvalConfig.mcq_sets() resolves it; None reads as 0)."""
    spec = spec if spec.shots is not None else spec.model_copy(update={"shots": 0})
    test = load_items(spec)
    where = f"eval.mcq.{spec.name}"
    problems = _test_problems(spec, test, where)
    items = sample_per_subject(test.items, spec.n_per_subject, spec.seed)
    pool: dict[str, list[MCQItem]] = {}
    source = "none"
    if spec.shots and items:
        if spec.dev_path:
            dev = load_items(spec, dev=True)
            source = f"dev {spec.dev_path}"
            pool = _group(dev.items)
            if len(pool) == 1:
                pool["*"] = next(iter(pool.values()))
            problems += _dev_problems(spec, dev, where)
        else:  # no dev split: the test file itself; exemplars_for leaves the scored question out
            source = f"test {spec.path} (the scored question left out)"
            pool = _group(test.items)
        problems += _shot_problems(spec, items, pool, source, where)
    return Prepared(spec, test, items, pool, source, problems)


def _group(items: list[MCQItem]) -> dict[str, list[MCQItem]]:
    out: dict[str, list[MCQItem]] = {}
    for it in items:
        out.setdefault(it.subject, []).append(it)
    return out


def _fix(reason: str, layout: MCQLayout, where: str, csv_file: bool) -> str:
    headerless = f"; a CSV without a header line needs {where}.csv_columns" if csv_file and not layout.csv_columns \
        else ""
    return {
        "multi_answer": f"set {where}.multi: true to score them as sets of letters (exact-set accuracy and "
                        "per-option F1)",
        "no_answer": f"point {where}.answer at the answer column (now {layout.answer!r})",
        "answer_not_a_choice": f"check {where}.answer ({layout.answer!r}) and {where}.answer_kind "
                               "(letter, index, index1, text)",
        "answer_text_mismatch": f"the answers' text names another option; check {where}.choices",
        "few_choices": f"point {where}.choices at the options (now {layout.choices!r}): a list of columns or "
                       "dotted paths, one path to a mapping {A: text} or a list, inline, or fixed_choices"
                       f"{headerless}",
        "no_question": f"point {where}.question at the question column (now {layout.question!r}){headerless}",
        "too_many_choices": f"at most {len(LETTERS)} options ({MAX_MULTI_OPTIONS} in a multi-answer set)",
        "not_a_row": "each row must be an object (a JSON object or a CSV line with a header)",
        "index_base": f"set {where}.answer_kind: index (0-based) or index1 (1-based)",
    }[reason]


def _unscorable(loaded: Loaded, where: str, field_name: str, layout: MCQLayout) -> str:
    top = loaded.skipped.most_common(1)[0][0]
    shown = "; ".join(f"{why}: {loaded.examples[why]}" for why, _ in loaded.skipped.most_common(_SHOWN_EXAMPLES))
    return (f"{field_name}: {loaded.n_skipped} of {loaded.rows} rows of {loaded.source} cannot be scored "
            f"({loaded.reasons()}; e.g. {shown}); {_fix(top, layout, where, loaded.csv)}")


def _test_problems(spec: MCQSet, test: Loaded, where: str) -> list[str]:
    layout = spec.layout()
    if spec.subjects and not test.rows:
        return [f"{where}.subjects: none of {', '.join(spec.subjects)} is in {spec.path} "
                f"(its subjects: {', '.join(test.subjects[:20])})"]
    problems = []
    if test.skipped["index_base"]:
        problems.append(f"{where}.answer_kind: {test.skipped['index_base']} numeric answers could count from 0 or "
                        f"from 1 (e.g. {test.examples['index_base']}); {_fix('index_base', layout, where, test.csv)}")
    if not test.items or test.n_skipped > spec.max_skipped_fraction * test.rows:
        line = _unscorable(test, where, where, layout) if test.rows else f"{where}: {spec.path} holds no rows"
        if test.items:
            line += f"; or raise {where}.max_skipped_fraction (now {spec.max_skipped_fraction})"
        problems.append(line)
    bare = [it for it in test.items if all(norm(t) == norm(lab) for lab, t in zip(it.labels, it.choices, strict=True))]
    if spec.fixed_choices is None and test.items and len(bare) * 2 > len(test.items):
        problems.append(f"{where}.choices: the options read from {spec.choices!r} are just their labels "
                        f"({', '.join(bare[0].choices)} in {bare[0].id}); point choices at the option texts "
                        "(a mapping {A: text} is read as label -> text, a list of columns as one option each)")
    return problems


def _dev_problems(spec: MCQSet, dev: Loaded, where: str) -> list[str]:
    if dev.items:
        return []
    layout = spec.layout(dev=True)
    why = _unscorable(dev, f"{where}.dev", f"{where}.dev", layout) if dev.rows else f"{where}.dev: no rows"
    return [f"{why} (the dev file's own layout: dev: {{path: {spec.dev_path}, question: .., choices: .. "
            f"({INLINE} when the options are lines of the question), answer: ..}})"]


def _shot_problems(spec: MCQSet, items: list[MCQItem], pool: dict[str, list[MCQItem]], source: str,
                   where: str) -> list[str]:
    if not pool:
        return []  # _dev_problems said why
    missing = sorted({it.subject for it in items if it.subject not in pool and "*" not in pool})
    if missing:
        close = {m: difflib.get_close_matches(m, list(pool), n=1) for m in missing}
        hints = [f"{m} (dev has {c[0]!r})" if c else m for m, c in close.items()]
        return [f"{where}.dev: no exemplars for subject(s) {', '.join(hints[:10])} in {spec.dev_path}; name dev "
                "files like the test files (<subject>_dev.csv) or lower shots to 0"]
    short = Counter()
    for it in items:
        got = len(exemplars_for(it, pool, spec.shots))
        if got < spec.shots:
            short[it.subject] = got
    if not short:
        return []
    subject, got = sorted(short.items())[0]
    return [f"{where}.shots: {spec.shots} exemplars asked, but subject {subject!r} has only {got} usable in "
            f"{source} ({len(short)} subject(s) short); lower shots or give a larger dev split"]
