"""data.prompt_template: a raw instruction template used instead of the model's chat template.

Course prompts (Alpaca's "Below is an instruction that describes a task... ### Response:", the
classical-Chinese course's "USER: {instruction} ASSISTANT:") are plain text, not chat templates. The
raw template is compiled into a Jinja chat template and installed on the tokenizer, so everything that
renders a conversation through `apply_chat_template` (training with the prompt masked, perplexity,
generation, chat-style MCQ) renders it the same way without a second code path:

  [BOS the tokenizer adds itself] + [system text + blank line] + template(user turn) + response + EOS

`{instruction}` is the user turn; when the template also names `{input}`, the user turn is split at its
first blank line (the loaders join Alpaca's instruction and input with one) and `{input}` is the rest
("" when there is none). The response and EOS follow the rendered template directly: the template
carries whatever separator it wants ("### Response:\\n").
"""

from __future__ import annotations

import hashlib
import json
import string
from typing import Any

FIELDS = ("instruction", "input")


def check_template(template: str) -> str:
    """The template itself, or ValueError naming the placeholder that cannot be filled."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"cannot read the template ({e}); write literal braces as {{{{ and }}}}") from None
    names = [name for _, name, _, _ in parsed if name is not None]
    for name in names:
        if name not in FIELDS:
            raise ValueError(f"unknown placeholder {{{name}}}; use {{instruction}} and {{input}} "
                             "(write a literal brace as {{ or }})")
    if "instruction" not in names:
        raise ValueError("the template has no {instruction} placeholder; the user turn would be dropped")
    if any(spec or conv for _, name, spec, conv in parsed if name is not None):
        raise ValueError("placeholders take no format spec or conversion; write {instruction} / {input}")
    return template


def _literal(text: str) -> str:
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""


def to_chat_template(template: str, add_bos: bool) -> str:
    """The Jinja chat template that renders `template` per user turn (see the module docstring)."""
    body = "".join(_literal(lit) + ("{{ " + name + " }}" if name is not None else "")
                   for lit, name, _, _ in string.Formatter().parse(check_template(template)))
    split = ("{%- set parts = message['content'].split('\\n\\n', 1) -%}"
             "{%- set instruction = parts[0] -%}"
             "{%- set input = parts[1] if parts | length > 1 else '' -%}") if "{input}" in template else \
        "{%- set instruction = message['content'] -%}"
    bos = "{{ bos_token }}" if add_bos else ""
    return (bos + "{%- for message in messages -%}"
            "{%- if message['role'] == 'system' -%}{{ message['content'] + '\\n\\n' }}"
            "{%- elif message['role'] == 'user' -%}" + split + body +
            "{%- elif message['role'] == 'assistant' -%}{{ message['content'] + eos_token }}"
            "{%- endif -%}{%- endfor -%}")


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts BOS in front of plain text itself (Llama, Gemma: yes; GPT-2, SmolLM: no)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a")["input_ids"]
    return bos is not None and bool(ids) and ids[0] == bos


def use_prompt_template(tokenizer: Any, template: str | None) -> Any:
    """Install `template` as the tokenizer's chat template (no-op for None). Returns the tokenizer."""
    if template:
        tokenizer.chat_template = to_chat_template(template, _adds_bos(tokenizer))
        tokenizer.raw_prompt_template = template
    return tokenizer


def template_tag(tokenizer: Any) -> str:
    """'' under the model's own chat template, else a short tag of the raw template: per-example caches of
    what the base model scores under a template (difficulty, IFD) are kept apart by it."""
    raw = getattr(tokenizer, "raw_prompt_template", None)
    return "" if not raw else "+tmpl-" + hashlib.sha1(raw.encode()).hexdigest()[:8]
