"""Prompt sets for generation and judging: rows with or without a reference answer.

load_examples() drops rows without an answer, but open-ended test sets (Koala, Vicuna, the
homework's 150 questions, classical_zh/private_test) have none, so this loader keeps them and
returns the reference separately when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainables.data.formats import CONVERTERS, read_rows, resolve_data_path, strip_alpaca_preamble


@dataclass
class PromptRow:
    id: str
    messages: list[dict[str, str]]  # the prompt: ends with a user turn
    reference: str | None = None


_ID_KEYS = ("id", "idx", "question_id", "index")
_TEXT_KEYS = ("prompt", "text", "Instruction", "question", "query", "input")


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
    elif isinstance(row.get("turns"), list) and row["turns"]:
        msgs = [{"role": "user", "content": str(row["turns"][0])}]  # FastChat question.jsonl: first turn
    else:
        key = next((k for k in _TEXT_KEYS if isinstance(row.get(k), str)), None)
        if key is None:
            raise ValueError(f"unrecognised prompt row with fields {sorted(row)}")
        msgs = [{"role": "user", "content": row[key]}]
    ref = None
    if msgs and msgs[-1]["role"] == "assistant":
        ref, msgs = msgs[-1]["content"], msgs[:-1]
    if not msgs or msgs[-1]["role"] != "user":
        raise ValueError("prompt row has no user turn to answer")
    return msgs, ref


def load_prompts(path: str, field_name: str = "eval.generate.data", limit: int | None = None) -> list[PromptRow]:
    rows = read_rows(resolve_data_path(path, field_name))[:limit]
    out = []
    for i, row in enumerate(rows):
        msgs, ref = _row_messages(row)
        rid = next((row[k] for k in _ID_KEYS if row.get(k) is not None), i)
        out.append(PromptRow(str(rid), msgs, ref))
    return out
