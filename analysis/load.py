"""Read one sweep directory into a `Sweep`: results table, sweep config, per-trial histories.

Only the files the driver writes are read (DESIGN.md, "results.csv contract"); W&B is never
consulted, so a report can be rebuilt from a copied run directory alone. Everything is
optional except results.csv: a sweep killed half-way still gets a report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

# The writer's own column names (a package that imports nothing): no harness import here.
from results_contract import COST, LEAD, SPACE_KINDS, TRAIN_METRICS

# Which columns are quality metrics, and which way is better, is what sweep.yaml's metric_directions says (the
# driver writes what the training loop and each evaluator declare). A sweep directory from before that key
# keeps the objective's search.mode; its other metrics are chosen by name as below and get no direction.
EVAL_PREFIXES = ("ppl_", "loss_", "mcq_", "judge_", "gen_")
NOT_METRIC_SUFFIXES = ("_seconds", "_cost_usd", "_tokens", "_n", "_requests", "_errors", "_failures", "_cache_hits",
                       "_empty", "_n_scored", "_n_skipped", "_top_letter_share", "_chance")
SEED_PATH = "train.seed"


@dataclass
class SpaceParam:
    """One search-space entry of sweep.yaml, whatever form it was dumped in."""

    path: str
    kind: str
    values: list[Any] = field(default_factory=list)  # choice/grid levels
    low: float | None = None
    high: float | None = None
    tie: str | None = None
    times: float = 1.0
    plus: float = 0.0

    @property
    def log(self) -> bool:
        return self.kind == "loguniform"


@dataclass
class Sweep:
    path: Path
    name: str
    config: dict[str, Any]
    results: pd.DataFrame
    histories: dict[str, pd.DataFrame]
    trial_configs: dict[str, dict[str, Any]]
    space: dict[str, SpaceParam]
    metric: str
    mode: str
    directions: dict[str, str | None] = field(default_factory=dict)  # sweep.yaml metric_directions

    def direction(self, metric: str) -> str | None:
        """'min' / 'max' as the sweep declared it; None for a count or an undeclared metric."""
        return self.mode if metric == self.metric else self.directions.get(metric)

    @property
    def eval_only(self) -> bool:
        return bool((self.config.get("eval") or {}).get("only"))

    @property
    def param_columns(self) -> list[str]:
        return [c for c in self.results.columns if c.startswith("config/")]

    @property
    def factors(self) -> list[str]:
        """Dotted paths varied in this sweep (seed and tied parameters excluded: they are not factors)."""
        out = []
        for col in self.param_columns:
            path = col.removeprefix("config/")
            if path == SEED_PATH or self.is_tied(path):
                continue
            if self.results[col].dropna().astype(str).nunique() > 1:
                out.append(path)
        return out

    @property
    def constants(self) -> dict[str, Any]:
        """config/ columns that took one value in every trial (listed once in the report)."""
        out = {}
        for col in self.param_columns:
            vals = self.results[col].dropna().astype(str).unique()
            if len(vals) == 1:
                out[col.removeprefix("config/")] = self.results[col].dropna().iloc[0]
        return out

    def is_tied(self, path: str) -> bool:
        p = self.space.get(path)
        return p is not None and p.kind == "tie"

    @property
    def seeds(self) -> list[Any]:
        col = f"config/{SEED_PATH}" if f"config/{SEED_PATH}" in self.results else "seed"
        if col not in self.results:
            return list(self.config.get("search", {}).get("seeds", []))
        return sorted(self.results[col].dropna().unique().tolist())

    @property
    def metrics(self) -> list[str]:
        """Recorded quality metrics (those with a declared direction), objective first."""
        cols = [c for c in self.results.columns if self._is_quality(c)
                and pd.api.types.is_numeric_dtype(self.results[c]) and self.results[c].notna().any()]
        return [self.metric] + [c for c in cols if c != self.metric] if self.metric in self.results else cols

    def setting(self, row: pd.Series, with_seed: bool = False) -> str:
        """The searched values of one results row ("lora.r = 8, train.lr = 0.0003"); the seed only when
        asked: a seed is a replicate, never part of a setting to recommend."""
        cols = [c for c in self.param_columns if with_seed or c != f"config/{SEED_PATH}"]
        parts = [f"{c.removeprefix('config/')} = {_short(row[c])}" for c in cols]
        return ", ".join(parts) if parts else "the base configuration"

    def _is_quality(self, col: str) -> bool:
        if self.directions:
            return bool(self.directions.get(col))
        # written before sweep.yaml held metric_directions
        entries = (self.config.get("eval") or {}).get("perplexity") or []  # paths, or {path, name, ...}
        configured = {f"ppl_{p.get('name') or Path(p['path']).stem}" if isinstance(p, dict) else f"ppl_{Path(p).stem}"
                      for p in entries}
        return _is_metric(col) or col in configured

    @property
    def costs(self) -> list[str]:
        return [c for c in COST if c in self.results and self.results[c].notna().any()]

    @property
    def finished(self) -> pd.DataFrame:
        return self.results[self.results["status"] == "TERMINATED"]

    def base_value(self, path: str) -> Any:
        """The configured default of a dotted path in sweep.yaml (None when absent)."""
        d: Any = self.config
        for part in path.split("."):
            if not isinstance(d, dict) or part not in d:
                return None
            d = d[part]
        return d


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _is_metric(col: str) -> bool:
    if col.endswith(NOT_METRIC_SUFFIXES):
        return False
    return col in TRAIN_METRICS or col.startswith(EVAL_PREFIXES) or col.endswith("_acc")


def parse_space(raw: dict[str, Any] | None) -> dict[str, SpaceParam]:
    """search.space as written by hand ({choice: [..]}) or by model_dump() (every kind, unused ones None)."""
    out = {}
    for path, entry in (raw or {}).items():
        if not isinstance(entry, dict):
            continue
        kind = next((k for k in SPACE_KINDS if entry.get(k) is not None), None)
        if kind is None:
            continue
        p = SpaceParam(path=path, kind=kind, times=float(entry.get("times", 1.0) or 1.0),
                       plus=float(entry.get("plus", 0.0) or 0.0))
        if kind in ("choice", "grid"):
            p.values = list(entry[kind])
        elif kind == "tie":
            p.tie = entry["tie"]
        else:
            p.low, p.high = (float(v) for v in entry[kind])
        out[path] = p
    return out


def _status_column(df: pd.DataFrame) -> pd.Series:
    """Normalise status; a row flagged stopped_early is EARLY_STOPPED even if an older driver said TERMINATED."""
    status = df["status"].fillna("UNKNOWN").astype(str).str.upper() if "status" in df else pd.Series(
        "TERMINATED", index=df.index)
    if "stopped_early" in df:
        flag = df["stopped_early"].astype(str).str.lower().isin(["true", "1", "yes"])
        status = status.where(~(flag & (status == "TERMINATED")), "EARLY_STOPPED")
    return status.replace({"INTERRUPTED": "RUNNING"})  # Ctrl-C: unfinished, --resume continues it


def read_results(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={"trial_id": str, "node_id": str, "pack_id": str,
                                   "packed_with": str})  # ids are text, even "4e095_00000"
    df["status"] = _status_column(df)
    df["stopped_early"] = df["status"] == "EARLY_STOPPED"
    for col in df.columns:
        if col in LEAD or col.startswith("config/"):
            continue
        # Metric and cost columns are numbers; blanks (failed trials) become NaN. A column with no
        # number at all (free text some driver added) is left alone.
        if not pd.api.types.is_numeric_dtype(df[col]):
            numbers = pd.to_numeric(df[col], errors="coerce")
            if numbers.notna().any():
                df[col] = numbers
    return df


def read_history(path: Path) -> pd.DataFrame:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a half-written last line from a killed trial
    df = pd.DataFrame(rows)
    if "training_iteration" not in df and len(df):
        df["training_iteration"] = range(1, len(df) + 1)
    return df


def load_sweep(run_dir: str | Path) -> Sweep:
    run_dir = Path(run_dir)
    results_file = run_dir / "results.csv"
    if not results_file.exists():
        raise FileNotFoundError(f"{results_file} not found; pass a sweep directory such as runs/<name>")
    config: dict[str, Any] = {}
    if (run_dir / "sweep.yaml").exists():
        config = yaml.safe_load((run_dir / "sweep.yaml").read_text(encoding="utf-8")) or {}
    results = read_results(results_file)
    search = config.get("search", {}) or {}
    metric = search.get("metric") or "eval_loss"
    directions = config.get("metric_directions") or {}
    mode = search.get("mode") or directions.get(metric) or "min"
    histories, trial_configs = {}, {}
    for tid in results["trial_id"].astype(str):
        tdir = run_dir / "trials" / tid
        if (tdir / "metrics.jsonl").exists():
            histories[tid] = read_history(tdir / "metrics.jsonl")
        if (tdir / "config.json").exists():
            try:
                trial_configs[tid] = json.loads((tdir / "config.json").read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                pass
    return Sweep(path=run_dir, name=str(config.get("name") or run_dir.name), config=config, results=results,
                 histories=histories, trial_configs=trial_configs, space=parse_space(search.get("space")),
                 metric=metric, mode=mode, directions=directions)


def finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
