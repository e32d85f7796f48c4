"""Load instruction data files into one normalised record: `Example` (chat messages + metadata).

Recognised row shapes (auto-detected per file):
  alpaca         {"instruction", "input", "output"}
  conversations  {"conversations": [{"from": "human"|"gpt", "value"}]}  (FastChat / ShareGPT)
  messages       {"messages": [{"role", "content"}]}                      (OpenAI style)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.paths import data_dirs, find_data


class DataNotFound(ValueError):
    """A data path resolves to nothing; the message names every place looked."""


@dataclass
class Example:
    id: str
    messages: list[dict[str, str]]  # [{"role": "system"|"user"|"assistant", "content": str}], ends with assistant
    score: float | None = None
    source: str = ""
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_text(self) -> str:
        return "\n".join(m["content"] for m in self.messages if m["role"] != "assistant")

    @property
    def response_text(self) -> str:
        return self.messages[-1]["content"] if self.messages and self.messages[-1]["role"] == "assistant" else ""


# The Alpaca preamble that FastChat copies of Alpaca carry inside the human turn. The chat
# template already frames the turn, so it is stripped (kept: the instruction and input).
_ALPACA_PREAMBLE = re.compile(
    r"^\s*Below is an instruction that describes a task(?:, paired with an input that provides further context)?\. "
    r"Write a response that appropriately completes the request\.\s*(?:###\s*Instruction:\s*)?",
)
_ALPACA_TAIL = re.compile(r"\s*###\s*Response:\s*$")
_ROLE = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
         "bing": "assistant", "bard": "assistant", "system": "system", "model": "assistant"}


def strip_alpaca_preamble(text: str) -> str:
    text = _ALPACA_TAIL.sub("", _ALPACA_PREAMBLE.sub("", text))
    return re.sub(r"\s*###\s*Input:\s*", "\n\n", text).strip()


def _from_alpaca(row: dict) -> list[dict[str, str]]:
    prompt = str(row["instruction"]).strip()
    if str(row.get("input") or "").strip():
        prompt += "\n\n" + str(row["input"]).strip()
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": str(row["output"])}]


def _from_conversations(row: dict) -> list[dict[str, str]]:
    msgs = [{"role": _ROLE[str(t["from"]).lower()], "content": str(t["value"])} for t in row["conversations"]]
    for m in msgs:
        if m["role"] == "user":
            m["content"] = strip_alpaca_preamble(m["content"])
    return msgs


def _from_messages(row: dict) -> list[dict[str, str]]:
    return [{"role": _ROLE[str(m["role"]).lower()], "content": str(m["content"])} for m in row["messages"]]


def detect_format(row: dict) -> str:
    if "conversations" in row:
        return "conversations"
    if "messages" in row:
        return "messages"
    if "instruction" in row and "output" in row:
        return "alpaca"
    raise ValueError(f"unrecognised row with fields {sorted(row)}; set data.format / data.fields")


CONVERTERS = {"alpaca": _from_alpaca, "conversations": _from_conversations, "messages": _from_messages}


def read_rows(path: Path) -> list[dict]:
    """json (array) or jsonl (also a .json file that holds JSON lines)."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def resolve_data_path(path: str, field_name: str = "data.train") -> Path:
    found = find_data(path)
    if found is None:
        looked = ", ".join(str(d / path) for d in data_dirs()) if not Path(path).is_absolute() else path
        raise DataNotFound(f"{field_name}: {path!r} not found (looked in: {looked}); set HARNESS_DATA_DIR or fix the path")
    return found


def load_examples(path: str, fmt: str = "auto", field_name: str = "data.train") -> list[Example]:
    """Load a file into Examples. Rows without a final assistant turn are dropped."""
    file = resolve_data_path(path, field_name)
    rows = read_rows(file)
    out: list[Example] = []
    for i, row in enumerate(rows):
        kind = detect_format(row) if fmt == "auto" else fmt
        msgs = CONVERTERS[kind](row)
        if not msgs or msgs[-1]["role"] != "assistant" or not msgs[-1]["content"].strip():
            continue
        score = row.get("score")
        out.append(Example(
            id=str(row.get("id", row.get("idx", i))),
            messages=msgs,
            score=float(score) if isinstance(score, (int, float)) else None,
            source=file.name,
            category=row.get("category") or row.get("type"),
        ))
    return out
