"""Moved to trainables/schema/data.py (the sweep schema's one home); this name keeps old imports working."""

from trainables.schema.base import Strict  # noqa: F401
from trainables.schema.data import *  # noqa: F403
