"""Keep API keys out of what a sweep writes.

Keys come only from the environment (the judge names its variable, W&B and the Hugging Face hub read
theirs). Nothing reads a key into a config, but a user can still paste one into the command line or
a free-text field; `redact` is applied to the texts that echo user input (sweep.yaml with its command,
each trial's config.json, the judge's error messages) before they are written.
"""

from __future__ import annotations

import os
import re

# Environment variables whose values are secrets: the well-known ones, and anything named like one.
KNOWN = ("OPENAI_API_KEY", "WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "ANTHROPIC_API_KEY")
_SECRET_NAME = re.compile(r"(API_?KEY|ACCESS_KEY|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)
MASK = "***"


def secret_values(extra_names: tuple[str, ...] = ()) -> list[str]:
    """Values of the secret environment variables set now (8+ characters: shorter ones are no keys)."""
    names = set(KNOWN) | set(extra_names) | {n for n in os.environ if _SECRET_NAME.search(n)}
    values = {os.environ[n] for n in names if len(os.environ.get(n, "")) >= 8}
    return sorted(values, key=len, reverse=True)  # longest first: a key containing another is masked whole


def redact(text: str, extra_names: tuple[str, ...] = ()) -> str:
    for value in secret_values(extra_names):
        text = text.replace(value, MASK)
    return text
