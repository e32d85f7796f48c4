"""Moved to trainables/storage.py (the trial writes through it too); this name keeps old imports working."""

from trainables.storage import NOT_PULLED, Storage, is_uri  # noqa: F401
