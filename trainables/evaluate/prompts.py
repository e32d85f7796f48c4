"""Prompt sets for generation and judging: rows with or without reference answers, one turn or several.

load_examples() drops rows without an answer, but open-ended test sets (Koala, Vicuna, the
homework's 150 questions, classical_zh/private_test) have none, so this loader keeps them and
returns the reference separately when there is one. MT-bench's question.jsonl (`turns: [..., ...]`,
optional `reference: [..., ...]`) gives questions of several turns, answered one after another.
load_references() reads reference answers kept in another file, keyed by id (MT-bench's
reference_answer/*.jsonl and model_answer/*.jsonl: `question_id`, `choices[0].turns`).
A row that fits no layout is an error naming the field, the file, the row and the layouts read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainables.data.formats import CONVERTERS, read_rows, resolve_data_path, strip_alpaca_preamble


@dataclass
class PromptRow:
    id: str
    messages: list[dict[str, str]]  # the prompt of the first turn: ends with a user turn
    reference: str | None = None  # reference answer to the first turn
    later_turns: list[str] = field(default_factory=list)  # the user's next turns, answered in order
    later_references: list[str | None] = field(default_factory=list)

    @property
    def turns(self) -> int:
        return 1 + len(self.later_turns)

    def references(self) -> list[str | None]:
        """One per turn (None where the row has none)."""
        later = list(self.later_references) + [None] * (len(self.later_turns) - len(self.later_references))
        return [self.reference] + later[: len(self.later_turns)]


ID_KEYS = ("id", "idx", "question_id", "index")
_TEXT_KEYS = ("prompt", "text", "Instruction", "question", "query", "input")
_REF_KEYS = ("reference", "references", "ref_answer", "answer", "output", "response", "completion")
LAYOUTS = ("prompt/text/question/query/input, instruction (+input/output), conversations or messages, "
           "or MT-bench's turns")


def _strs(v: Any) -> list[str] | None:
    """A text or a list of texts as a list; None for anything else."""
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return list(v)
    return None


def _row_messages(row: dict[str, Any]) -> tuple[list[dict[str, str]], str | None]:
    if "conversations" in row or "messages" in row:
        msgs = CONVERTERS["conversations" if "conversations" in row else "messages"](row)
    elif "instruction" in row:
        prompt = strip_alpaca_preamble(str(row["instruction"]))
        ref = row.get("output")
        instances = row.get("instances")  # Self-Instruct: instruction + first instance's input/output
        if isinstance(instances, list) and instances and isinstance(instances[0], dict):
            extra, ref = str(instances[0].get("input") or ""), instances[0].get("output", ref)
        else:
            extra = str(row.get("input") or "")
        msgs = [{"role": "user", "content": prompt + ("\n\n" + extra.strip() if extra.strip() else "")}]
        if ref is not None and str(ref).strip():
            msgs.append({"role": "assistant", "content": str(ref)})
    else:
        key = next((k for k in _TEXT_KEYS if isinstance(row.get(k), str)), None)
        if key is None:
            raise ValueError(f"fields {sorted(row)} fit no prompt layout (read: {LAYOUTS})")
        msgs = [{"role": "user", "content": row[key]}]
    ref = None
    if msgs and msgs[-1]["role"] == "assistant":
        ref, msgs = msgs[-1]["content"], msgs[:-1]
    if not msgs or msgs[-1]["role"] != "user":
        raise ValueError("no user turn to answer")
    return msgs, ref


def _row(row: Any, i: int) -> PromptRow:
    if not isinstance(row, dict):
        raise ValueError(f"expected an object, got {type(row).__name__}")
    rid = str(next((row[k] for k in ID_KEYS if row.get(k) is not None), i))
    turns = row.get("turns")
    if turns is not None:  # MT-bench question.jsonl: every turn is answered, in order
        texts = _strs(turns)
        if texts is None:
            raise ValueError("'turns' must be a list of the user's texts")
        refs = _strs(row.get("reference")) or []
        return PromptRow(rid, [{"role": "user", "content": texts[0]}], refs[0] if refs else None, texts[1:],
                         list(refs[1:]))
    msgs, ref = _row_messages(row)
    return PromptRow(rid, msgs, ref)


def load_prompts(path: str, field_name: str = "eval.generate.data", limit: int | None = None) -> list[PromptRow]:
    """The rows of a prompt file (the first `limit`); ValueError naming the field, file and row otherwise."""
    found = resolve_data_path(path, field_name)
    try:
        rows = read_rows(found)[:limit]
    except ValueError as e:
        raise ValueError(f"{field_name}: {e}") from None
    if not rows:
        raise ValueError(f"{field_name}: {found.name} holds no rows")
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(_row(row, i))
        except ValueError as e:
            raise ValueError(f"{field_name}: row {i + 1} of {found.name}: {e}") from None
    ids = [r.id for r in out]
    dup = next((x for x in ids if ids.count(x) > 1), None) if len(set(ids)) < len(ids) else None
    if dup is not None:
        raise ValueError(f"{field_name}: id {dup!r} appears twice in {found.name}; answers are kept and judged by id")
    return out


def _row_references(row: dict[str, Any]) -> list[str] | None:
    choices = row.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):  # MT-bench answer files
        first = choices[0]
        got = _strs(first.get("turns"))
        if got is None and isinstance(first.get("message"), dict):
            got = _strs(first["message"].get("content"))
        return got or _strs(first.get("text"))
    for k in _REF_KEYS:
        got = _strs(row.get(k))
        if got:
            return got
    try:
        return _strs(_row_messages(row)[1])
    except ValueError:
        return None


def load_references(path: str, field_name: str = "eval.judge.references") -> dict[str, list[str | None]]:
    """Reference answers by id, one per turn. ValueError naming the field, the file and the row otherwise."""
    found = resolve_data_path(path, field_name)
    try:
        rows = read_rows(found)
    except ValueError as e:
        raise ValueError(f"{field_name}: {e}") from None
    out: dict[str, list[str | None]] = {}
    for i, row in enumerate(rows, 1):
        where = f"{field_name}: row {i} of {found.name}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
        rid = next((row[k] for k in ID_KEYS if row.get(k) is not None), None)
        if rid is None:
            raise ValueError(f"{where} has no id ({', '.join(ID_KEYS)}) to match the questions by "
                             f"(fields: {sorted(row)})")
        refs = _row_references(row)
        if refs is None:
            raise ValueError(f"{where}: no reference answer in fields {sorted(row)}; expected MT-bench's "
                             f"choices[0].turns, a {'/'.join(_REF_KEYS)} text or list, or a prompt row with "
                             "its answer (instruction/output, conversations, messages)")
        if str(rid) in out:
            raise ValueError(f"{where}: id {rid!r} appears twice")
        out[str(rid)] = list(refs)
    if not out:
        raise ValueError(f"{field_name}: {found.name} holds no rows")
    return out
