"""The package layout's rules (docs/DESIGN.md, "Layout"): imports flow harness -> trainables, never back; the
analysis imports neither; the schema and the old module names import on their own, in any order."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def imported(package: str) -> dict[str, set[str]]:
    """file -> the top-level packages its import statements name (inside functions too)."""
    out: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(REPO))] = names
    return out


def test_trainables_never_import_harness_and_analysis_imports_neither():
    assert [f for f, names in imported("trainables").items() if "harness" in names or "analysis" in names] == []
    assert [f for f, names in imported("analysis").items() if {"harness", "trainables"} & names] == []
    assert all(not names - {"__future__"} for names in imported("results_contract").values())  # imports nothing


@pytest.mark.parametrize("first", [
    "trainables.schema.data", "trainables.schema.eval", "trainables.schema", "trainables.evaluate",
    "trainables.trial", "trainables.eval_trial", "harness.config",
])
def test_each_entry_imports_first_in_a_fresh_process(first):
    # A module imported halfway through an import cycle is left without the names defined after the cycle
    # began: the schema's defaults import the evaluators, which import the schema.
    code = (f"import {first}\nfrom trainables.schema.eval import EvalConfig, MCQSet\n"
            "from trainables.schema.data import SelectionConfig\nfrom trainables.schema import SweepConfig\n"
            "from harness.config import SweepConfig as S2, load_sweep\nassert S2 is SweepConfig\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
