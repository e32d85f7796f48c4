"""Moved to trainables/eval_trial.py (beside the training trial); this name keeps old imports working."""

from trainables.eval_trial import eval_trial, evaluate_config, held_out_loss, icl_pool, load_for_eval  # noqa: F401
