"""End to end: a real tiny sweep through Ray Tune (sweeps/smoke.yaml, minutes on 2 cores),
then the report on its directory. Marked slow: `pytest -m slow tests/test_analysis_integration.py`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_report_on_a_real_smoke_sweep(smoke_run: Path, tmp_path: Path):
    run = smoke_run  # a real 3-trial sweep through Ray Tune, shared with tests/test_sweep_e2e.py
    results = pd.read_csv(run / "results.csv", dtype={"trial_id": str})
    assert len(results) >= 2

    from analysis.report import write_report
    t_report = write_report([run], out_dir=tmp_path / "report")
    text = t_report.read_text()
    for section in ("## Research question", "## Experiment design", "## Results", "## Analysis", "## Conclusion",
                    "## Reproducibility"):
        assert section in text
    assert "python -m harness.sweep sweeps/smoke.yaml" in text  # the exact command from sweep.yaml
    for tid in results["trial_id"]:  # every trial appears, whatever its status
        assert tid in text
    trials = pd.read_csv(tmp_path / "report" / "tables" / "trials.csv", dtype={"trial_id": str})
    assert sorted(trials["trial_id"]) == sorted(results["trial_id"])
    assert (tmp_path / "report" / "tables" / "ablation_lora_r.tex").exists()
    curves = tmp_path / "report" / "figures" / "learning_curves.png"
    assert curves.read_bytes()[:8] == PNG_MAGIC
    # The driver wrote its own report at the end of the sweep too (default out dir).
    assert (run / "report" / "report.md").exists()
