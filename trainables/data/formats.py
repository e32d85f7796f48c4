"""Load instruction data into one normalised record: `Example` (chat messages + metadata).

Recognised row shapes (auto-detected per row, or forced with data.format):
  alpaca             {"instruction", "input"?, "output"}  (also {"input", "output"}: the input is the prompt)
  conversations      {"conversations": [{"from": "human"|"gpt", "value"}]}  (FastChat / ShareGPT; LIMA's
                     plain list of strings alternates user / assistant)
  messages           {"messages": [{"role", "content"}]}                      (OpenAI style)
  prompt_completion  {"prompt", "completion"}

Files: .json (array, or JSON lines despite the name), .jsonl, .csv/.tsv, .parquet; a relative path is
looked up in trainables.paths.data_dirs(); `hf:org/name` (or a bare `org/name` with no file suffix that
is not on disk) goes through `datasets.load_dataset`. Columns with other names are mapped with
data.fields (canonical name -> column), e.g. {instruction: question, output: answer}.

Rows that cannot become a conversation ending in a non-empty assistant turn are *bad rows*: counted
by reason in a LoadReport, with a few examples, and fatal past data.max_bad_fraction.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.paths import data_dirs, find_data


class DataNotFound(ValueError):
    """A data path resolves to nothing; the message names every place looked."""


class BadRows(ValueError):
    """Too many malformed rows; the message says how many, why, and shows examples."""


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
        return "\n".join(m["content"] for m in self.messages[:-1] if m["role"] != "system") \
            if self.response_text else "\n".join(m["content"] for m in self.messages if m["role"] == "user")

    @property
    def response_text(self) -> str:
        return self.messages[-1]["content"] if self.messages and self.messages[-1]["role"] == "assistant" else ""

    @property
    def text(self) -> str:
        """The whole conversation (prompt turns and responses), for lengths and embeddings."""
        return "\n".join(m["content"] for m in self.messages if m["role"] != "system")


def example_key(e: Example) -> str:
    """The example's content hash: the key of every per-example cache (scores, token ids)."""
    return hashlib.sha1(json.dumps(e.messages, ensure_ascii=False).encode()).hexdigest()


# The Alpaca preamble that FastChat copies of Alpaca carry inside the human turn. The chat
# template already frames the turn, so it is stripped (kept: the instruction and input).
_ALPACA_PREAMBLE = re.compile(
    r"^\s*Below is an instruction that describes a task(?:, paired with an input that provides further context)?\. "
    r"Write a response that appropriately completes the request\.\s*(?:###\s*Instruction:\s*)?",
)
_ALPACA_TAIL = re.compile(r"\s*###\s*Response:\s*$")
_ROLE = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
         "bing": "assistant", "bard": "assistant", "system": "system", "model": "assistant"}

# data.fields keys: the names the converters read. Anything else in a row is kept in Example.meta.
CANONICAL = ("instruction", "input", "output", "conversations", "messages", "prompt", "completion", "system",
             "id", "score", "category")
_ID_KEYS = ("id", "idx", "question_id")
_CATEGORY_KEYS = ("category", "type", "focus_area")


def strip_alpaca_preamble(text: str) -> str:
    text = _ALPACA_TAIL.sub("", _ALPACA_PREAMBLE.sub("", text))
    return re.sub(r"\s*###\s*Input:\s*", "\n\n", text).strip()


def _text(value: Any, what: str) -> str:
    if value is None:
        raise ValueError(f"missing {what}")
    if not isinstance(value, (str, int, float)):
        raise ValueError(f"{what} is a {type(value).__name__}, not text")
    return str(value)


def _role(name: Any) -> str:
    role = _ROLE.get(str(name).lower())
    if role is None:
        raise ValueError(f"unknown role {name!r}")
    return role


def _with_system(row: dict, msgs: list[dict[str, str]]) -> list[dict[str, str]]:
    system = row.get("system")
    if isinstance(system, str) and system.strip() and (not msgs or msgs[0]["role"] != "system"):
        return [{"role": "system", "content": system}, *msgs]
    return msgs


def _from_alpaca(row: dict) -> list[dict[str, str]]:
    parts = [_text(row[k], k).strip() for k in ("instruction", "input") if row.get(k) not in (None, "")]
    if not parts:
        raise ValueError("missing instruction")
    prompt = "\n\n".join(p for p in parts if p)
    return _with_system(row, [{"role": "user", "content": prompt},
                              {"role": "assistant", "content": _text(row.get("output"), "output")}])


def _from_conversations(row: dict) -> list[dict[str, str]]:
    turns = row["conversations"]
    if not isinstance(turns, list):
        raise ValueError("conversations is not a list")
    if all(isinstance(t, str) for t in turns):  # LIMA: plain strings, user first, alternating
        msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    else:
        msgs = [{"role": _role(t["from"]), "content": _text(t["value"], "value")} for t in turns]
    for m in msgs:
        if m["role"] == "user":
            m["content"] = strip_alpaca_preamble(m["content"])
    return _with_system(row, msgs)


def _from_messages(row: dict) -> list[dict[str, str]]:
    if not isinstance(row["messages"], list):
        raise ValueError("messages is not a list")
    return [{"role": _role(m["role"]), "content": _text(m["content"], "content")} for m in row["messages"]]


def _from_prompt_completion(row: dict) -> list[dict[str, str]]:
    return _with_system(row, [{"role": "user", "content": _text(row.get("prompt"), "prompt").strip()},
                              {"role": "assistant", "content": _text(row.get("completion"), "completion")}])


def detect_format(row: dict) -> str:
    if "conversations" in row:
        return "conversations"
    if "messages" in row:
        return "messages"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    if "instruction" in row or ("output" in row and "input" in row):
        return "alpaca"
    raise ValueError(f"unrecognised row with fields {sorted(row)}; set data.format / data.fields")


CONVERTERS = {"alpaca": _from_alpaca, "conversations": _from_conversations, "messages": _from_messages,
              "prompt_completion": _from_prompt_completion}


# ----------------------------------------------------------------------------- reading files


@dataclass
class _Unparsable:
    """A JSON line that did not parse: kept in place so it is counted as a bad row, not a crash."""

    error: str


def _json_rows(text: str) -> list[Any]:
    """A JSON array, or JSON lines. BadRows (naming line and column) for an array that does not parse,
    and for one pretty-printed object, which would otherwise turn into hundreds of 'bad rows'."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise BadRows(f"not valid JSON at line {e.lineno} column {e.colno} ({e.msg}); fix the file") from None
    if stripped.startswith("{") and "\n" in stripped.strip():
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
        if isinstance(whole, dict):
            keys = ", ".join(list(whole)[:5])
            raise BadRows(f"holds one JSON object (keys {keys}), not a list of rows; give a JSON array or JSON lines")
    rows: list[Any] = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                rows.append(_Unparsable(f"line {n}: invalid JSON ({e.msg})"))
    return rows


def read_rows(path: Path) -> list[dict]:
    """json (array) or jsonl (also a .json file that holds JSON lines). A bad JSON line is an error here;
    load_examples() counts it as a bad row instead."""
    rows = read_any(Path(path))
    bad = next((r for r in rows if isinstance(r, _Unparsable)), None)
    if bad is not None:
        raise ValueError(f"{path}: {bad.error}")
    return rows


def _csv_rows(path: Path) -> list[dict]:
    # utf-8-sig: some exports start with a BOM that would otherwise stick to the first header.
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))


def _parquet_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def read_any(path: Path) -> list[Any]:
    """Rows of a local file by suffix; unparsable JSON lines come back as placeholders (bad rows)."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _csv_rows(path)
    if suffix == ".parquet":
        return _parquet_rows(path)
    try:
        return _json_rows(path.read_text(encoding="utf-8"))
    except BadRows as e:
        raise BadRows(f"{path}: {e}") from None


_HF_PREFIX = "hf:"
_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet")


def is_hub_id(path: str) -> bool:
    """`hf:org/name`, or a bare `org/name` that is not a local file and has no file suffix."""
    if path.startswith(_HF_PREFIX):
        return True
    parts = path.split("/")
    return (len(parts) == 2 and all(parts) and not path.startswith((".", "~"))
            and not path.lower().endswith(_FILE_SUFFIXES) and find_data(path) is None)


def _hub_rows(path: str, split: str, field_name: str) -> list[dict]:
    name = path.removeprefix(_HF_PREFIX)
    try:
        import datasets

        return list(datasets.load_dataset(name, split=split))
    except Exception as e:  # the hub client raises many types; all mean "could not get it"
        raise DataNotFound(
            f"{field_name}: could not load Hugging Face dataset {name!r} split {split!r} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); the hub may be unreachable: "
            "download the file and give its local path instead"
        ) from None


def resolve_data_path(path: str, field_name: str = "data.train", folder_ok: bool = False) -> Path:
    """The data file at `path` (`folder_ok`: or a folder of them, e.g. an MCQ benchmark's per-subject CSVs)."""
    found = find_data(path)
    if found is None:
        looked = ", ".join(str(d / path) for d in data_dirs()) if not Path(path).is_absolute() else path
        raise DataNotFound(f"{field_name}: {path!r} not found (looked in: {looked}); set HARNESS_DATA_DIR or fix the path")
    if not found.is_file() and not folder_ok:
        raise DataNotFound(f"{field_name}: {path!r} is a directory ({found}), not a data file; give a json, jsonl, "
                           "csv or parquet file")
    return found


# ----------------------------------------------------------------------------- rows -> Examples


@dataclass
class LoadReport:
    """What happened to the rows of one file: how many loaded, how many were bad and why."""

    source: str
    rows: int = 0
    loaded: int = 0
    bad: Counter = field(default_factory=Counter)  # reason -> count
    samples: list[str] = field(default_factory=list)  # "row 17: missing output (fields: ...)"

    @property
    def n_bad(self) -> int:
        return sum(self.bad.values())

    def summary(self) -> str:
        reasons = ", ".join(f"{n}x {why}" for why, n in self.bad.most_common())
        return f"{self.n_bad} of {self.rows} rows in {self.source} are malformed ({reasons}); e.g. " + \
            "; ".join(self.samples)


_MAX_SAMPLES = 3


def map_fields(row: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    """Rename columns to canonical names (canonical -> column). A mapped column is consumed, so
    {instruction: input} does not leave the same text in `input` as well."""
    if not fields:
        return dict(row)
    out = {k: v for k, v in row.items() if k not in fields.values()}
    for canonical, column in fields.items():
        if column in row:
            out[canonical] = row[column]
    return out


def _unwrap(row: Any) -> Any:
    # Lawyer LLaMA's legal_advice.json / judical_examination.json: every item is a one-element list.
    while isinstance(row, list) and len(row) == 1:
        row = row[0]
    return row


def _score(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f else None  # NaN (e.g. an empty parquet cell) is no score


def _messages(row: Mapping[str, Any], fmt: str) -> list[dict[str, str]]:
    """The row's conversation, ending in a non-empty assistant turn; prompts without the Alpaca template."""
    kind = detect_format(row) if fmt == "auto" else fmt
    try:
        msgs = CONVERTERS[kind](row)
    except KeyError as e:
        raise ValueError(f"missing {e.args[0]}") from None
    if not msgs or msgs[-1]["role"] != "assistant" or not msgs[-1]["content"].strip():
        raise ValueError("no assistant response")
    for m in msgs:  # any source may carry the Alpaca template inside the prompt (FastChat exports do)
        if m["role"] == "user":
            m["content"] = strip_alpaca_preamble(m["content"])
    return msgs


def row_to_example(row: Any, i: int, source: str, fmt: str = "auto",
                   fields: Mapping[str, str] | None = None) -> Example:
    """One row -> Example; ValueError with a short reason when the row is malformed."""
    if isinstance(row, _Unparsable):
        raise ValueError(row.error)
    row = _unwrap(row)
    if not isinstance(row, Mapping):
        raise ValueError(f"row is a {type(row).__name__}, not an object")
    row = map_fields(row, fields or {})
    msgs = _messages(row, fmt)
    rid = next((row[k] for k in _ID_KEYS if row.get(k) not in (None, "")), None)
    category = next((row[k] for k in _CATEGORY_KEYS if isinstance(row.get(k), str) and row[k]), None)
    extra = {k: v for k, v in row.items() if k not in CANONICAL and k not in _ID_KEYS
             and isinstance(v, (str, int, float, bool))}
    return Example(
        # Without an id the row's place in its file names it, so selected_ids.json can find the row again.
        id=str(rid) if rid is not None else f"{source}#{i}",
        messages=msgs,
        score=_score(row.get("score")),
        source=source,
        category=category,
        meta=extra,
    )


def load_with_report(
    path: str, fmt: str = "auto", field_name: str = "data.train", *,
    fields: Mapping[str, str] | None = None, split: str = "train", limit: int | None = None,
) -> tuple[list[Example], LoadReport]:
    """Load a file (or hub dataset) into Examples; bad rows are skipped and described in the report.
    `limit`: stop after that many examples (the report then counts the rows read up to there)."""
    if is_hub_id(path):
        rows, source = _hub_rows(path, split, field_name), path.removeprefix(_HF_PREFIX)
    else:
        file = resolve_data_path(path, field_name)
        try:
            rows, source = read_any(file), file.name
        except UnicodeDecodeError as e:
            raise ValueError(f"{field_name}: {file} is not UTF-8 text (byte {e.start} is 0x{e.object[e.start]:02x}: a "
                          "binary file?); give a json, jsonl or csv file saved as UTF-8, or a .parquet file") from None
    report = LoadReport(source=source, rows=len(rows))
    out: list[Example] = []
    for i, row in enumerate(rows):
        if limit is not None and len(out) >= limit:
            report.rows = i
            break
        try:
            out.append(row_to_example(row, i, source, fmt, fields))
        except (ValueError, TypeError) as e:
            reason = str(e).split(" with fields")[0].split(";")[0]
            report.bad[reason] += 1
            if len(report.samples) < _MAX_SAMPLES:
                keys = sorted(_unwrap(row)) if isinstance(_unwrap(row), Mapping) else []
                report.samples.append(f"row {i}: {e}" + (f" (fields: {', '.join(map(str, keys))})" if keys else ""))
    report.loaded = len(out)
    return out, report


def check_bad_rows(report: LoadReport, max_bad_fraction: float, field_name: str = "data.train") -> None:
    """Raise BadRows when the malformed share of a file passes the threshold, or (threshold below 1)
    when nothing at all loaded. 1.0 is the lenient loader of evaluation files: never raise."""
    if max_bad_fraction < 1 and report.loaded == 0:
        why = report.summary() if report.n_bad else f"{report.source} holds no rows"
        raise BadRows(f"{field_name}: {why}; nothing to train on. Map its columns with data.fields / data.format")
    if report.n_bad > max_bad_fraction * report.rows:
        raise BadRows(f"{field_name}: {report.summary()}. Over data.max_bad_fraction={max_bad_fraction}: "
                      "fix the file, map its columns with data.fields / data.format, or raise the threshold")


def load_examples(
    path: str, fmt: str = "auto", field_name: str = "data.train", *,
    fields: Mapping[str, str] | None = None, split: str = "train", max_bad_fraction: float = 1.0,
) -> list[Example]:
    """Load a file into Examples. Bad rows are dropped; past max_bad_fraction (default: never,
    unless nothing loads) it raises BadRows naming what was wrong."""
    examples, report = load_with_report(path, fmt, field_name, fields=fields, split=split)
    check_bad_rows(report, max_bad_fraction, field_name)
    return examples
