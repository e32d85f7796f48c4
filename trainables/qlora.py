"""Moved: the trial is trainables/trial.py, the training step's parts trainables/training.py; this name keeps
old imports working."""

from trainables.schema import trial_config  # noqa: F401
from trainables.training import *  # noqa: F403
from trainables.trial import train_loop, train_trial  # noqa: F401
