"""Chat-template an Example and mask the prompt: loss only on assistant tokens."""

from __future__ import annotations

from typing import Any

IGNORE = -100


def encode(tokenizer: Any, messages: list[dict[str, str]], max_len: int) -> tuple[list[int], list[int]]:
    """Return (input_ids, labels) with every non-assistant token labelled IGNORE.

    Each assistant turn is located by rendering the conversation up to it with and without
    that turn (the template must be prefix-consistent, as chat templates are), and the prompt
    and response pieces are tokenized separately, as at generation time. Truncated to max_len.
    """
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prefix = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not prefix.startswith(rendered) or not upto.startswith(prefix):
            raise ValueError("chat template is not prefix-consistent; cannot mask prompt tokens")
        p_ids = tokenizer(prefix[len(rendered):], add_special_tokens=False)["input_ids"]
        r_ids = tokenizer(upto[len(prefix):], add_special_tokens=False)["input_ids"]
        ids += p_ids + r_ids
        labels += [IGNORE] * len(p_ids) + r_ids
        rendered = upto
    return ids[:max_len], labels[:max_len]


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the prompt for generation (everything before the last assistant turn)."""
    ctx = messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages
    text = tokenizer.apply_chat_template(ctx, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
