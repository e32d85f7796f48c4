"""Sweep analysis: ablation tables, hyperparameter sensitivity, learning curves, the report.

Entry point: `python -m analysis.report runs/<sweep> [runs/<other> ...]` or
`analysis.report.write_report([Path("runs/<sweep>")])`. Everything is read from the sweep
directory (results.csv, sweep.yaml, trials/*/metrics.jsonl), never from W&B.
"""
