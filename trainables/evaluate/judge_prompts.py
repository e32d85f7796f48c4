"""Judge prompts: the built-in templates, prompt files and the placeholders each judging mode supplies.

A prompt file (`eval.judge.template`) is either plain text (one template) or a JSONL / JSON list of named
prompts in MT-bench's judge_prompts.jsonl layout (`name`, `type`, `system_prompt`, `prompt_template`,
`output_format`, `description`, `category`), one of which `eval.judge.prompt` selects.

Placeholders supplied when turn t of a question is judged (t = 1 for single-turn questions):
  both modes  {question} {reference} (turn t's), {question_k} {ref_answer_k} (k <= t)
  single      {answer} {history}; {answer_k}: the model's answer to turn k
  pairwise    {answer_a} {answer_b} {history_a} {history_b}; {answer_a_k} {answer_b_k}
              (A is shown first: the reference in one order, the model's answer in the other)
{history...} is the conversation before turn t. A template with turn-numbered placeholders up to K
(MT-bench's *-multi-turn prompts: K = 2) judges turn K. Common names of other judge prompt formats
are aliases (ALIASES). Other braces (JSON examples) are left alone; an unknown {name} is a config error.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

SYSTEM = "You are a careful, impartial assistant that grades the quality of answers to user questions."

PAIRWISE = """[Question]
{question}

[The Start of Assistant A's Answer]
{answer_a}
[The End of Assistant A's Answer]

[The Start of Assistant B's Answer]
{answer_b}
[The End of Assistant B's Answer]

[Instructions]
Compare the two answers to the question above. Judge how helpful, relevant, accurate and detailed
each one is, and give each assistant one overall score from 1 to 10 (higher is better).
On the FIRST line write only the two scores, Assistant A first, separated by a space (for example: 7 5).
Then, from the second line on, explain your judgement briefly. The order in which the answers appear
must not influence your scores, nor must their length."""

SINGLE = """[Question]
{question}

[The Start of the Answer]
{answer}
[The End of the Answer]

[Instructions]
Rate how helpful, relevant, accurate and detailed the answer above is, on a scale from 1 to 10
(higher is better). On the FIRST line write only "Rating: N" with N an integer from 1 to 10.
Then explain your rating briefly."""

SINGLE_REF = """[Question]
{question}

[Reference Answer]
{reference}

[The Start of the Answer]
{answer}
[The End of the Answer]

[Instructions]
Using the reference answer as a guide to what a correct answer contains, rate how helpful, relevant,
accurate and detailed the answer above is, on a scale from 1 to 10 (higher is better).
On the FIRST line write only "Rating: N" with N an integer from 1 to 10. Then explain briefly."""

# Later turns of a multi-turn question: the same grading, with the conversation so far in front.
PAIRWISE_MULTI = """[Assistant A's conversation so far]
{history_a}

[Assistant B's conversation so far]
{history_b}

""" + PAIRWISE.replace("[Question]", "[The user's next question]")
SINGLE_MULTI = "[The conversation so far]\n{history}\n\n" + SINGLE.replace("[Question]", "[The user's next question]")
SINGLE_REF_MULTI = "[The conversation so far]\n{history}\n\n" + SINGLE_REF.replace(
    "[Question]", "[The user's next question]")

# Output formats (MT-bench's output_format values) and what each verdict holds.
VERDICT, RATING, PAIR_SCORES = "[[A]]", "[[rating]]", "[[rating_a,rating_b]]"
OUTPUT_FORMATS = (VERDICT, RATING, PAIR_SCORES)

ALIASES = {  # other judge prompt formats' names -> ours (AlpacaEval, Prometheus, Vicuna's first judge)
    "common": {"instruction": "question", "prompt": "question", "query": "question", "input": "question",
               "reference_answer": "reference", "ref_answer": "reference", "ref": "reference"},
    "single": {"response": "answer", "output": "answer"},
    "pairwise": {"answer_1": "answer_a", "answer_2": "answer_b", "output_1": "answer_a", "output_2": "answer_b",
                 "response_a": "answer_a", "response_b": "answer_b"},
}
_NAME = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_FAMILIES = {  # turn-numbered placeholders: (family, turn)
    "single": re.compile(r"^(question|answer|ref_answer)_([1-9][0-9]?)$"),
    "pairwise": re.compile(r"^(question|answer_a|answer_b|ref_answer)_([1-9][0-9]?)$"),
}
_PLAIN = {"single": ("question", "answer", "reference", "history"),
          "pairwise": ("question", "answer_a", "answer_b", "reference", "history_a", "history_b")}
_ANSWERS = {"single": ("answer",), "pairwise": ("answer_a", "answer_b")}


def canonical(name: str, mode: str) -> str:
    return ALIASES[mode].get(name) or ALIASES["common"].get(name) or name


def _parts(name: str, mode: str) -> tuple[str, int] | None:
    """(family, turn) of a canonical placeholder; turn 0 = the judged turn; None = not supplied."""
    if name in _PLAIN[mode]:
        return name, 0
    m = _FAMILIES[mode].match(name)
    if not m:
        return None
    family = {"ref_answer": "reference"}.get(m.group(1), m.group(1))
    return family, int(m.group(2))


def available(mode: str) -> str:
    turn = ("{question_N}, {answer_N}, {ref_answer_N}" if mode == "single"
            else "{question_N}, {answer_a_N}, {answer_b_N}, {ref_answer_N}")
    plain = ", ".join("{" + n + "}" for n in _PLAIN[mode])
    return f"{plain}; per turn N: {turn}"


@dataclass(frozen=True)
class Shape:
    """What a template shows: turns K (0 = any turn, no turn numbers), references, earlier turns."""

    turns: int
    reference: bool
    history: bool


def template_shape(text: str, mode: str) -> Shape:
    """Raise ValueError naming the first placeholder the mode does not supply, or a missing answer."""
    parts = []
    for name in dict.fromkeys(_NAME.findall(text)):
        p = _parts(canonical(name, mode), mode)
        if p is None:
            raise ValueError(f"placeholder {{{name}}} is not supplied in {mode} mode; available: {available(mode)}")
        parts.append(p)
    families = {f for f, _ in parts}
    need = ["question", *_ANSWERS[mode]]
    missing = [f for f in need if f not in families]
    if missing:
        raise ValueError(f"a {mode} judge template must show " + " and ".join("{" + m + "}" for m in missing)
                         + f" (available: {available(mode)})")
    turns = max((k for _, k in parts), default=0)
    history = turns > 1 or any(f.startswith("history") for f in families)
    return Shape(turns, "reference" in families, history)


def fill(template: str, mode: str, values: dict[str, str]) -> str:
    """One pass (text substituted in is never scanned again); aliases map to the supplied names."""
    return _NAME.sub(lambda m: values.get(canonical(m.group(1), mode), m.group(0)), template)


# ----------------------------------------------------------------------------- prompt files


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    template: str
    system: str | None  # None: the default SYSTEM
    type: str | None = None  # "single" | "pairwise" (named prompts)
    output_format: str | None = None

    def kind(self, mode: str) -> str:
        """The verdict this prompt asks for: the file's output_format, else what its text asks for."""
        if self.output_format:
            return self.output_format
        text = f"{self.system or ''}\n{self.template}"
        if mode == "pairwise" and "[[A]]" in text and "[[B]]" in text:
            return VERDICT
        return PAIR_SCORES if mode == "pairwise" else RATING


_TYPES = {"single": "single", "pairwise": "pairwise", "pair": "pairwise"}


def _named(row: object, where: str) -> JudgePrompt:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected an object with name and prompt_template")
    template = row.get("prompt_template", row.get("template"))
    if not isinstance(row.get("name"), str) or not isinstance(template, str):
        raise ValueError(f"{where}: a named judge prompt needs 'name' and 'prompt_template' "
                         f"(MT-bench judge_prompts.jsonl layout; fields here: {sorted(row)})")
    kind = row.get("type")
    if kind is not None and kind not in _TYPES:
        raise ValueError(f"{where}: type {kind!r} is neither single nor pairwise")
    fmt = row.get("output_format")
    if fmt is not None and fmt not in OUTPUT_FORMATS:
        raise ValueError(f"{where}: output_format {fmt!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    system = row.get("system_prompt")
    return JudgePrompt(row["name"], template, system if isinstance(system, str) else None,
                       _TYPES.get(kind) if kind else None, fmt)


def _json_prompts(text: str, path: Path) -> list[object] | None:
    """The rows of a JSON / JSONL prompt file; None when the text is not JSON (a plain template)."""
    stripped = text.lstrip()
    if not stripped.startswith(("{", "[")):
        return None
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, list):
        return data
    if isinstance(data, dict):  # one prompt, or {name: prompt, ...}
        if "prompt_template" in data or "template" in data:
            return [data]
        return [{"name": k, **v} if isinstance(v, dict) else v for k, v in data.items()]
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if path.suffix.lower() in (".jsonl", ".json") or rows:
                raise ValueError(f"{path.name} line {i} is not JSON ({e.msg})") from None
            return None  # a text template that happens to start with a brace
    return rows


@functools.lru_cache(maxsize=32)
def _read_prompts(path: str, _mtime: int) -> tuple[JudgePrompt, ...] | str:
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    rows = _json_prompts(text, p)
    if rows is None:
        return text
    prompts = tuple(_named(r, f"{p.name} entry {i}") for i, r in enumerate(rows, 1))
    seen = [x.name for x in prompts]
    dup = next((n for n in seen if seen.count(n) > 1), None)
    if dup:
        raise ValueError(f"{p.name}: two prompts are named {dup!r}")
    if not prompts:
        raise ValueError(f"{p.name} holds no prompts")
    return prompts


def read_prompt_file(path: Path) -> tuple[JudgePrompt, ...] | str:
    """Named prompts of a JSON / JSONL file, or the text of a plain template. Raises ValueError."""
    return _read_prompts(str(path), path.stat().st_mtime_ns)


def multi_turn_name(name: str) -> str:
    """MT-bench's naming: the prompt for later turns of `single-v1` is `single-v1-multi-turn`."""
    return f"{name}-multi-turn"


# ----------------------------------------------------------------------------- schemas for structured output

_SCORE = {"type": "integer", "enum": list(range(1, 11))}


def verdict_schema(kind: str) -> dict:
    """JSON schema of a verdict of this kind (response_format of a schema-constrained reply)."""
    props = {VERDICT: {"verdict": {"type": "string", "enum": ["A", "B", "C"]}},
             RATING: {"rating": _SCORE},
             PAIR_SCORES: {"score_a": _SCORE, "score_b": _SCORE}}[kind]
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


# ----------------------------------------------------------------------------- the prompts a judge run uses


class PromptError(ValueError):
    """A judge prompt setting that cannot work; `field` is the eval.judge key to fix."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class PromptSet:
    """The prompts of one judge config: turn 1 and later turns, without and with a reference."""

    mode: str
    kind: str  # the verdict asked for (OUTPUT_FORMATS)
    first: JudgePrompt
    later: JudgePrompt | None = None  # later turns; None: `first` serves every turn
    ref_first: JudgePrompt | None = None  # rows with a reference (eval.judge.reference_prompt)
    ref_later: JudgePrompt | None = None

    def for_turn(self, turn: int, has_ref: bool) -> JudgePrompt:
        first, later = (self.ref_first, self.ref_later) if has_ref and self.ref_first else (self.first, self.later)
        return first if turn == 1 or later is None else later

    def shape(self, p: JudgePrompt) -> Shape:
        return template_shape(p.template, self.mode)

    def turn_problem(self, turn: int, has_ref: bool) -> tuple[str, str] | None:
        """(eval.judge key, why) turn `turn` of a question cannot be judged with these prompts, or None."""
        p = self.for_turn(turn, has_ref)
        key = "reference_prompt" if has_ref and self.ref_first else "prompt"
        shape = self.shape(p)
        if shape.turns and shape.turns != turn:
            return key, f"prompt {p.name!r} shows turn {shape.turns} only, not turn {turn}"
        if turn > 1 and not shape.history:
            return key, (f"prompt {p.name!r} shows no earlier turns ({{history}}, or {{question_1}} ... as "
                         "MT-bench's *-multi-turn prompts)")
        return None

    def needs_reference(self, turn: int, has_ref: bool) -> bool:
        return self.mode == "pairwise" or self.shape(self.for_turn(turn, has_ref)).reference


def _builtin(mode: str, system: str | None) -> PromptSet:
    sys_text = SYSTEM if system is None else system

    def mk(name: str, text: str) -> JudgePrompt:
        return JudgePrompt(name, text, sys_text)
    if mode == "pairwise":
        return PromptSet(mode, PAIR_SCORES, mk("builtin-pairwise", PAIRWISE), mk("builtin-pairwise-multi-turn",
                                                                                   PAIRWISE_MULTI))
    return PromptSet(mode, RATING, mk("builtin-single", SINGLE), mk("builtin-single-multi-turn", SINGLE_MULTI),
                     mk("builtin-single-ref", SINGLE_REF), mk("builtin-single-ref-multi-turn", SINGLE_REF_MULTI))


def _pick(prompts: tuple[JudgePrompt, ...], name: str, field: str, file: str) -> JudgePrompt:
    found = next((p for p in prompts if p.name == name), None)
    if found is None:
        raise PromptError(field, f"{name!r} is not in {file}; choose one of: {', '.join(p.name for p in prompts)}")
    return found


def _checked(p: JudgePrompt, mode: str, field: str, system: str | None) -> JudgePrompt:
    if p.type and p.type != mode:
        raise PromptError(field, f"prompt {p.name!r} is a {p.type} prompt but eval.judge.mode is {mode}; "
                                 f"set eval.judge.mode: {p.type} or choose a {mode} prompt")
    try:
        shape = template_shape(p.template, mode)
    except ValueError as e:
        raise PromptError(field, f"prompt {p.name!r}: {e}") from None
    if shape.turns > 1 and not p.name.endswith("-multi-turn"):
        raise PromptError(field, f"prompt {p.name!r} shows turn {shape.turns} ({{question_{shape.turns}}}); name the "
                                 "prompt for the first turn here: its -multi-turn variant judges later turns")
    return p if system is None else JudgePrompt(p.name, p.template, system, p.type, p.output_format)


def _named_set(prompts: tuple[JudgePrompt, ...], file: str, prompt: str, reference_prompt: str | None,
               system: str | None, mode: str | None) -> tuple[str, JudgePrompt, JudgePrompt | None,
                                                               JudgePrompt | None, JudgePrompt | None]:
    first = _pick(prompts, prompt, "prompt", file)
    mode = mode or first.type or "pairwise"
    names = {p.name for p in prompts}

    def later(p: JudgePrompt, field: str) -> JudgePrompt | None:
        name = multi_turn_name(p.name)
        return _checked(_pick(prompts, name, field, file), mode, field, system) if name in names else None
    first = _checked(first, mode, "prompt", system)
    ref = ref_later = None
    if reference_prompt:
        ref = _checked(_pick(prompts, reference_prompt, "reference_prompt", file), mode, "reference_prompt", system)
        if not template_shape(ref.template, mode).reference:
            raise PromptError("reference_prompt", f"prompt {ref.name!r} shows no reference answer ({{ref_answer_1}} "
                                                  "or {reference}); choose one that does")
        ref_later = later(ref, "reference_prompt")
    return mode, first, later(first, "prompt"), ref, ref_later


def _kind(s: PromptSet, output_format: str | None, field: str) -> PromptSet:
    """`s` with the verdict kind its prompts ask for (eval.judge.output_format overrides them all)."""
    prompts = [p for p in (s.first, s.later, s.ref_first, s.ref_later) if p is not None]
    kinds = {output_format} if output_format else {p.kind(s.mode) for p in prompts}
    if len(kinds) > 1:
        raise PromptError(field, f"the prompts {', '.join(repr(p.name) for p in prompts)} ask for different verdicts "
                                 f"({', '.join(sorted(kinds))}); set eval.judge.output_format")
    kind = kinds.pop()
    if (kind == RATING) != (s.mode == "single"):
        raise PromptError("output_format" if output_format else field,
                          f"output format {kind} does not fit eval.judge.mode {s.mode} (single: {RATING}; "
                          f"pairwise: {VERDICT} or {PAIR_SCORES})")
    return PromptSet(s.mode, kind, s.first, s.later, s.ref_first, s.ref_later)


@functools.lru_cache(maxsize=64)
def _prompt_set(template: str | None, mtime: int, prompt: str | None, reference_prompt: str | None,
                system: str | None, output_format: str | None, mode: str | None) -> PromptSet:
    if template is None:
        if prompt or reference_prompt:
            raise PromptError("prompt" if prompt else "reference_prompt",
                              "names a prompt in eval.judge.template, which is not set; set it to a JSONL of named "
                              "judge prompts (MT-bench's judge_prompts.jsonl layout)")
        return _kind(_builtin(mode or "pairwise", system), output_format, "mode")
    path = Path(template)
    try:
        read = read_prompt_file(path)
    except ValueError as e:
        raise PromptError("template", str(e)) from None
    if isinstance(read, str):
        if prompt or reference_prompt:
            raise PromptError("prompt" if prompt else "reference_prompt",
                              f"{path.name} is one plain template, not a file of named prompts; drop this key")
        mode = mode or "pairwise"
        p = JudgePrompt(path.name, read, SYSTEM if system is None else system)
        try:
            template_shape(read, mode)
        except ValueError as e:
            raise PromptError("template", f"{path.name}: {e}") from None
        return _kind(PromptSet(mode, RATING, p), output_format, "template")
    if not prompt:
        raise PromptError("prompt", f"{path.name} holds {len(read)} named judge prompts; choose one with "
                                    f"eval.judge.prompt: {', '.join(p.name for p in read)}")
    mode, first, later, ref, ref_later = _named_set(read, path.name, prompt, reference_prompt, system, mode)
    return _kind(PromptSet(mode, RATING, first, later, ref, ref_later), output_format, "prompt")


def prompt_set(template: Path | None, prompt: str | None = None, reference_prompt: str | None = None,
               system: str | None = None, output_format: str | None = None, mode: str | None = None) -> PromptSet:
    """The prompts for a judge config (mode None: the named prompt's type, else pairwise). Raises PromptError."""
    mtime = template.stat().st_mtime_ns if template is not None else 0
    return _prompt_set(str(template) if template else None, mtime, prompt, reference_prompt, system, output_format,
                       mode)
