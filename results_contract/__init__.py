"""The names results.csv is built from, defined once (docs/DESIGN.md, "results.csv contract").

The driver's writer (harness/results.py), the schema (trainables/schema/sweep.py) and the analysis
(analysis/load.py) all read them from here. This package imports nothing, so the analysis can use it
and still import neither harness nor trainables (it reads a run directory's files, and these names).
"""

# Search-space entry kinds (sweep.yaml search.space.<path>: exactly one of them).
SPACE_KINDS = ("choice", "grid", "uniform", "loguniform", "int", "tie")

# Metrics the training loop itself reports, with their direction; evaluators add theirs (EvalConfig.directions()).
TRAIN_METRICS: dict[str, str] = {
    "eval_loss": "min", "best_eval_loss": "min", "eval_perplexity": "min", "train_loss": "min"}
HELDOUT_METRICS = ("eval_loss", "best_eval_loss", "eval_perplexity")  # what an eval-only trial scores on request

# results.csv: first these columns, then config/<path> per searched path, the metrics, then COST, then the rest.
LEAD = ("trial_id", "status", "stopped_early", "error", "node_id", "pack_id", "packed_with", "seed", "error_type",
        "failures")
COST = ("train_seconds", "tokens_seen", "train_tokens", "n_examples", "trainable_params", "tokens_per_second")
