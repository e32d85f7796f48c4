"""Tables to CSV, LaTeX (booktabs) and Markdown; number formatting shared by the report.

Written by hand rather than DataFrame.to_latex / to_markdown: those need jinja2 / tabulate,
and the report must not fail on a missing optional package.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "±": r"$\pm$", "Δ": r"$\Delta$", "≈": r"$\approx$", "–": "--", "×": r"$\times$"}


def fmt(v: Any, digits: int = 4) -> str:
    """A cell: floats to `digits` significant digits, NaN/None blank, the rest as str."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if v.is_integer() and abs(v) < 1e12:
            return str(int(v))
        return f"{v:.{digits}g}"
    return str(v)


def _cells(df: pd.DataFrame) -> list[list[str]]:
    return [[fmt(v) for v in row] for row in df.itertuples(index=False, name=None)]


def to_markdown(df: pd.DataFrame) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    head = [esc(str(c)) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in _cells(df)]
    return "\n".join(lines) + "\n"


def latex_escape(s: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in s)


def to_latex(df: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A booktabs table: numeric-looking columns right-aligned, text left-aligned."""
    cells = _cells(df)
    numeric = re.compile(r"^[+\-]?[\d.]+(e[+\-]?\d+)?$|^$|^–$")
    align = "".join("r" if all(numeric.match(r[i]) for r in cells) else "l" for i in range(len(df.columns)))
    lines = [r"\begin{table}[ht]", r"\centering", r"\small"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule",
              " & ".join(latex_escape(str(c)) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in cells]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, tables_dir: Path, name: str, caption: str = "") -> str:
    """Write tables/<name>.csv|.tex|.md; return the Markdown for report.md."""
    tables_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(tables_dir / f"{name}.csv", index=False)
    (tables_dir / f"{name}.tex").write_text(to_latex(df, caption, f"tab:{name}"), encoding="utf-8")
    md = to_markdown(df)
    (tables_dir / f"{name}.md").write_text(md, encoding="utf-8")
    return md


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
