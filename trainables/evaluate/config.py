"""Moved to trainables/schema/eval.py (the sweep schema's one home); this name keeps old imports working."""

from trainables.schema.eval import *  # noqa: F403
