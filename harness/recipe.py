"""python -m harness.recipe sweeps/recipes/FILE.yaml [--resume] [key=value ...]

A course's homework as one command: the base model's baselines (an eval-only sweep of the same file,
k-shot levels from the recipe's `# baseline-shots:` header line), the LoRA sweep itself, one report of
both, and the deliverables at the sweep's top level (the best trial's answers.json under the name its
`# deliverable:` line gives; the learning curve of its `# curve:` metric in the report). Overrides apply
to both sweeps (a model on a GPU, smaller limits); the baselines are named <name>-baseline.

Header lines read here (plain comments, so the file stays a normal sweep file):
  # baseline-shots: 0, 4          k of the k-shot base-model baselines (none: no baseline sweep)
  # deliverable: private_test_answers.json
  # curve: ppl_mean_public_test
  # case-studies: mcq_law            a case-study table of that MCQ set's predictions
  # length-control: yes               each trial's mean answer length and length-controlled judge score
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from harness.config import ConfigError, load_sweep

EXIT_CONFIG = 2


def header(path: Path) -> dict[str, str]:
    """`# key: value` lines of the recipe's leading comment block."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        m = re.match(r"#\s*(baseline-shots|deliverable|curve|case-studies|length-control):\s*(.+?)\s*$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def baseline_overrides(name: str, shots: str, judged: bool) -> list[str]:
    """The eval-only sweep of the same file: the base model, k-shot at each level, nothing trained. It
    generates answers only when a judge grades them (`judged`): nothing else in a baseline reads them, and
    4-shot answers to classical_zh's 16 private-test prompts took 3 of its 8.6 minutes (2026-12-02)."""
    levels = [int(k) for k in re.split(r"[,\s]+", shots.strip()) if k]
    return ["eval.only=true", f"name={name}-baseline", "search.algorithm=grid", "scheduler.type=fifo",
            f"search.space={{eval.icl_shots: {{grid: {levels}}}}}", "search.seeds=[0]", "search.num_samples=1",
            *([] if judged else ["eval.generate.data=null"])]


def _sweep(recipe: Path, overrides: list[str], resume: bool) -> int:
    cmd = [sys.executable, "-m", "harness.sweep", str(recipe), *overrides, "--no-report"]
    print("$ " + " ".join(cmd[1:]), flush=True)
    return subprocess.run([*cmd, *(["--resume"] if resume else [])]).returncode


def deliver(run_dir: Path, name: str) -> Path:
    """Copy the best trial's answers.json (best.yaml names it) to run_dir/name; ValueError saying what is missing."""
    import yaml

    best = run_dir / "best.yaml"
    if not best.exists():
        raise ValueError(f"no trial of {run_dir.name} finished with a score ({best} is missing); no {name} to write")
    tid = str((yaml.safe_load(best.read_text()) or {}).get("trial_id", ""))
    src = run_dir / "trials" / tid / "answers.json"
    if not src.exists():
        raise ValueError(f"the best trial {tid} wrote no answers.json; set eval.generate.answers_key")
    shutil.copyfile(src, run_dir / name)
    return run_dir / name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.recipe", description=__doc__.splitlines()[0])
    ap.add_argument("recipe", type=Path)
    ap.add_argument("--resume", action="store_true", help="continue both sweeps where they stopped")
    ap.add_argument("overrides", nargs="*", help="key=value, applied to the baselines and the sweep")
    args = ap.parse_args(argv)
    try:
        cfg, _ = load_sweep(str(args.recipe), args.overrides)
    except ConfigError as e:
        for p in e.problems:
            print(f"error: {p}", file=sys.stderr)
        return EXIT_CONFIG
    head = header(args.recipe)
    dirs = []
    if head.get("baseline-shots"):
        judged = cfg.eval.judge.enabled or "eval.judge.enabled" in cfg.search.space
        base_over = [*args.overrides, *baseline_overrides(cfg.name, head["baseline-shots"], judged)]
        if rc := _sweep(args.recipe, base_over, args.resume):
            return rc
        dirs.append(cfg.run_dir.parent / f"{cfg.name}-baseline")
    if rc := _sweep(args.recipe, args.overrides, args.resume):
        return rc
    run_dir = cfg.run_dir
    from analysis.recipe_sections import add_sections
    from analysis.report import main as report

    out = run_dir / "report"
    if rc := report([str(run_dir), *map(str, dirs), "--out", str(out)]):
        return rc
    try:
        delivered = deliver(run_dir, head["deliverable"]) if head.get("deliverable") else None
    except ValueError as e:
        print(f"error: deliverable: {e}", file=sys.stderr)
        return 1
    add_sections(out, run_dir, dirs, curve=head.get("curve"), delivered=delivered,
                 case_set=head.get("case-studies"), length_control=head.get("length-control") == "yes")
    print(f"recipe {cfg.name}: report {out / 'report.md'}" + (f"; deliverable {delivered}" if delivered else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
