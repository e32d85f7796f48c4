"""answers.json: a trial's generated answers in a course's submission shape.

A JSON list in the prompt file's order, one object per question: {"id": ..., <key>: answer} with key
eval.generate.answers_key ("output" for the classical-Chinese course's {id, output}, "answer" for
{id, answer}). A question of several turns gets its last answer, as pred.json does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainables.paths import atomic_write_text

FILE = "answers.json"


def write_answers(trial_dir: Path, gens: list[dict[str, Any]], key: str) -> Path:
    rows = [{"id": r["id"], key: (r.get("outputs") or [r.get("output", "")])[-1]} for r in gens]
    path = Path(trial_dir) / FILE
    atomic_write_text(path, json.dumps(rows, ensure_ascii=False, indent=1))
    return path
