"""Chat-template an Example and mask the prompt: loss only on assistant tokens."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

IGNORE = -100


def _turns(tokenizer: Any, messages: list[dict[str, str]]) -> Iterator[tuple[list[int], list[int]]]:
    """(prompt piece ids, response piece ids) per assistant turn; the pieces concatenate to the
    whole templated conversation up to the last assistant turn.

    Each assistant turn is located by rendering the conversation up to it with and without
    that turn (the template must be prefix-consistent, as chat templates are), and the prompt
    and response pieces are tokenized separately, as at generation time.
    """
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
        yield p_ids, r_ids
        rendered = upto


def encode(tokenizer: Any, messages: list[dict[str, str]], max_len: int) -> tuple[list[int], list[int]]:
    """Return (input_ids, labels) with every non-assistant token labelled IGNORE. Truncated to max_len."""
    ids: list[int] = []
    labels: list[int] = []
    for p_ids, r_ids in _turns(tokenizer, messages):
        ids += p_ids + r_ids
        labels += [IGNORE] * len(p_ids) + r_ids
    return ids[:max_len], labels[:max_len]


def last_turn(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """(context ids, final response ids): everything before the last assistant turn (earlier turns
    included, untruncated) and that turn itself, tokenized exactly as encode() does."""
    context: list[int] = []
    response: list[int] = []
    for p_ids, r_ids in _turns(tokenizer, messages):
        context += response + p_ids
        response = r_ids
    return context, response


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the prompt for generation (everything before the last assistant turn)."""
    ctx = messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages
    text = tokenizer.apply_chat_template(ctx, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
