"""Chat-template an Example and mask the prompt: loss only on assistant tokens.

Tokenization happens once per sweep: the driver's plan encodes the examples it selects (the base
config's subset and the held-out set) into a `Tokens` table, and Ray hands that table to every trial
(tune.with_parameters, through its object store). A trial encodes only what the table lacks (examples
a searched selection chose), and its worker keeps those for its later trials (`worker_tokens`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from trainables.data.formats import Example, example_key
from trainables.data.prompt_template import template_tag

IGNORE = -100
UNCUT = 10**9  # a max_len that cuts nothing
Encoded = tuple[list[int], list[int]]  # (input_ids, labels)


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


def encode(tokenizer: Any, messages: list[dict[str, str]], max_len: int) -> Encoded:
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


class Tokens:
    """Each example's (input_ids, labels) under one tokenizer, encoded once and kept uncut: encode()
    truncates by cutting the tail, so the cut copy serves every max_seq_len a sweep tries.
    `table` (content hash -> encoding) is what the driver ships to the trials; `encoded` counts the
    examples encoded here rather than found in it."""

    def __init__(self, tokenizer: Any, table: dict[str, Encoded] | None = None):
        self.tokenizer = tokenizer
        self.table = dict(table or {})
        self.encoded = 0

    def __call__(self, e: Example, max_len: int = UNCUT) -> Encoded:
        key = example_key(e)
        found = self.table.get(key)
        if found is None:
            found = self.table[key] = encode(self.tokenizer, e.messages, UNCUT)
            self.encoded += 1
        return found[0][:max_len], found[1][:max_len]


_worker_tables: dict[str, Tokens] = {}


def worker_tokens(model_name: str, tokenizer: Any, shared: dict[str, Encoded]) -> Tokens:
    """This process's Tokens for `model_name`: the driver's table plus what earlier trials in this
    (reused) worker encoded themselves. `encoded` starts at 0 for the caller's trial."""
    key = model_name + template_tag(tokenizer)  # a searched data.prompt_template encodes differently
    tokens = _worker_tables.get(key)
    if tokens is None:
        tokens = _worker_tables[key] = Tokens(tokenizer)
    tokens.tokenizer, tokens.encoded = tokenizer, 0
    tokens.table.update(shared)
    return tokens
