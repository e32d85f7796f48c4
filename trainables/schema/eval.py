"""Config section for evaluations run at the end of a trial (composed into trainables.schema.SweepConfig).

Defaults run nothing extra (cheap). Each sub-section switches one evaluator on:
    perplexity: [classical_zh/public_test.json]          -> ppl_public_test, ppl_mean_public_test, ...
    mcq: [{name: mmlu, preset: mmlu, n_per_subject: 5}]  -> mcq_mmlu_acc, mcq_mmlu_n_scored, mcq_acc, ...
    generate: {data: eval/evol_instruct_gt.json}         -> pred.json + gen_* metrics
    judge: {enabled: true, base_url: ..., model: ...}    -> judge_score, judge_parse_failures, ...
`only: true` makes a trial evaluate without training (baselines, decoding sweeps): the driver then
runs trainables.eval_trial.eval_trial instead of the training trial.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from trainables.paths import find_data
from trainables.schema.base import Strict
from trainables.schema.data import canonical_fields
from trainables.schema.lm_eval import LMEvalConfig

if TYPE_CHECKING:
    from trainables.evaluate.judge_prompts import PromptSet


def _must_exist(path: str, what: str, file: bool = False) -> str:
    """`file`: it must be a file (a directory is fine for an MCQ benchmark's folder of CSVs)."""
    found = find_data(path)
    if found is None:
        raise ValueError(f"{what} {path!r} not found (relative paths are looked up under HARNESS_DATA_DIR, "
                         "the working directory and ../shared/data)")
    if file and not found.is_file():
        raise ValueError(f"{what} {path!r} is a directory ({found}), not a file; give the data file itself")
    return path


def field_error(model: str, field: str, message: str) -> ValidationError:
    """A validation error located at `field` of the model, raised from a model validator (cross-field
    checks would otherwise be reported at the section, not at the key to fix)."""
    detail = InitErrorDetails(type=PydanticCustomError("value_error", "{msg}", {"msg": message}), loc=(field,),
                              input=None)
    return ValidationError.from_exception_data(model, [detail])


def metric_stem(path: str) -> str:
    """`classical_zh/public_test.json` -> `public_test` (safe as a results.csv column)."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", Path(path).stem).strip("_") or "data"


# Column layouts of public benchmarks; a preset fills whatever the YAML leaves out. The first five are the
# folders in ../shared/data/mcq (path and dev included); the others are layouts only (give path: ...).
MCQ_PRESETS: dict[str, dict[str, Any]] = {
    "mmlu": {"path": "mcq/mmlu/test", "dev": "mcq/mmlu/dev", "question": "question",
             "choices": ["choice0", "choice1", "choice2", "choice3"], "answer": "answer", "answer_kind": "index"},
    "cmmlu": {"path": "mcq/cmmlu/test", "dev": "mcq/cmmlu/dev", "question": "Question",
              "choices": ["A", "B", "C", "D"], "answer": "Answer", "answer_kind": "letter"},
    "arc": {"path": "mcq/arc/ARC-Challenge-Test.jsonl", "dev": "mcq/arc/ARC-Challenge-Dev.jsonl",
            "question": "question.stem", "choices": "question.choices", "answer": "answerKey"},
    "fineval": {"path": "mcq/fineval/val", "dev": "mcq/fineval/dev", "question": "question",
                "choices": ["A", "B", "C", "D"], "answer": "answer", "answer_kind": "letter"},
    "ideafinbench": {"path": "mcq/ideafinbench/cfa_l1/val", "dev": "mcq/ideafinbench/cfa_l1/dev",
                     "question": "question", "choices": ["A", "B", "C", "D"], "answer": "answer",
                     "answer_kind": "letter"},
    # MedQA (jind11/MedQA jsonl): {"question", "options": {"A": .., "E": ..}, "answer_idx": "B", "answer": text}
    "medqa": {"question": "question", "choices": "options", "answer": "answer_idx", "answer_kind": "letter"},
    # PubMedQA (pqa_labeled): {"QUESTION", "CONTEXTS": [..], "final_decision": "yes"}
    "pubmedqa": {"question": "QUESTION", "context": "CONTEXTS", "fixed_choices": ["yes", "no", "maybe"],
                 "answer": "final_decision", "answer_kind": "text"},
    # MMLU-Pro: {"question", "options": [up to 10 strings], "answer": "C", "category"}
    "mmlu_pro": {"question": "question", "choices": "options", "answer": "answer", "answer_kind": "letter",
                 "subject_field": "category"},
    # C-Eval (ceval-exam csv): id, question, A, B, C, D, answer (letter)
    "ceval": {"question": "question", "choices": ["A", "B", "C", "D"], "answer": "answer", "answer_kind": "letter",
              "language": "zh"},
}
INLINE = "inline"  # choices: inline = the options are lines of the question text ("A. ...", "B、...")
AnswerKind = Literal["auto", "letter", "index", "index1", "text"]
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class MCQLayout(Strict):
    """Where a row keeps its parts (columns, or dotted paths into nested rows)."""

    question: str = Field("question", description="column, or dotted path into nested rows (question.stem)")
    context: str | None = Field(None, description="passage shown before the question (a text or a list of texts)")
    choices: list[str] | str | None = Field(
        None, description="columns / dotted paths [A, B, C, D] or [options.A, ..]; or one path to a mapping "
                          "{A: text}, a list of texts or a list of {label, text}; or 'inline' (options are "
                          "'A. text' lines inside the question)")
    fixed_choices: list[str] | None = Field(None, description="the same options for every row, e.g. [yes, no, maybe]")
    answer: str = Field("answer", description="column / dotted path of the answer")
    answer_kind: AnswerKind = Field(
        "auto", description="letter ('B', 'B. text', 'ABD' in multi sets), index (0-based), index1 (1-based), "
                            "text (the option's text); auto: a label, a decorated letter, the option text, or "
                            "an index whose base the whole set decides (ambiguous: an error)")
    subject_field: str | None = Field(None, description="column naming the subject; default: the file name")
    csv_columns: list[str] | None = Field(
        None, description="names of the columns of CSV files without a header line (MMLU's original files: "
                          "[question, A, B, C, D, answer]); their first line is then a question")

    @field_validator("choices")
    @classmethod
    def _choices(cls, v: list[str] | str | None) -> list[str] | str | None:
        if isinstance(v, list) and not 2 <= len(v) <= 26:
            raise ValueError("give 2 to 26 columns")
        return v

    @field_validator("fixed_choices")
    @classmethod
    def _fixed(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not 2 <= len(v) <= 26 or len({c.strip().lower() for c in v}) != len(v)):
            raise ValueError("give 2 to 26 distinct options")
        return v


class MCQDev(MCQLayout):
    """Few-shot exemplars in a file of their own layout: every column setting left out is the set's."""

    path: str = Field(..., description="file, or folder of <subject>_dev files")
    question: str | None = None  # type: ignore[assignment]
    answer: str | None = None  # type: ignore[assignment]
    answer_kind: AnswerKind | None = None  # type: ignore[assignment]

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return _must_exist(v, "mcq dev")


class MCQSet(MCQLayout):
    """One multiple-choice benchmark: a file (csv/json/jsonl) or a folder of per-subject files."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_]+$", description="metric names become mcq_<name>_acc")
    preset: Literal["mmlu", "cmmlu", "arc", "fineval", "ideafinbench", "medqa", "pubmedqa", "mmlu_pro",
                    "ceval"] | None = None
    path: str = Field(..., description="file, or folder of <subject>[_test|_val|_dev].csv files")
    dev: MCQDev | None = Field(
        None, description="few-shot exemplars: a path in the set's layout, or {path, question, choices, answer, ..} "
                          "in its own; none: exemplars from the test file itself, never the scored question")
    multi: bool = Field(False, description="answers are sets of letters ('ABD', 'A,C'): exact-set accuracy and "
                                           "per-option F1 (mcq_<name>_set_acc, _option_f1), not in mcq_acc")
    shots: int | None = Field(None, ge=0, le=25, description="k-shot; default eval.icl_shots")
    n_per_subject: int | None = Field(None, ge=1, description="sample this many questions per subject")
    subjects: list[str] | None = Field(None, description="restrict to these subjects")
    seed: int = 0
    score: Literal["letter", "text", "text_norm"] = Field(
        "letter", description="log-likelihood of the letter, of the choice text, or of the text per character")
    template: Literal["raw", "chat"] = Field("raw", description="plain 'Answer:' prompt or the chat template")
    language: Literal["en", "zh"] = Field("en", description="wording of the default header and answer prefix")
    header: str | None = Field(None, description="text before the questions; {subject} is replaced")
    answer_prefix: str | None = Field(None, description="text before the answer; default 'Answer:' / '答案：'")
    subject_names: dict[str, str] = Field(default_factory=dict, description="subject -> wording in the header")
    max_skipped_fraction: float = Field(
        0.05, ge=0, le=1, description="rows that cannot be scored (reasons counted) tolerated before the trial "
                                      "fails; the sweep refuses to start past it")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") in MCQ_PRESETS:
            return {**MCQ_PRESETS[data["preset"]], **data}
        return data

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return _must_exist(v, "mcq path")

    @field_validator("dev", mode="before")
    @classmethod
    def _dev(cls, v: Any) -> Any:
        return {"path": v} if isinstance(v, str) else v  # a plain path: the set's own layout

    @field_validator("header")
    @classmethod
    def _header(cls, v: str | None) -> str | None:
        unknown = sorted({m for m in _PLACEHOLDER.findall(v or "") if m != "subject"})
        if unknown:
            raise ValueError(f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
                             "only {subject} is filled in")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> MCQSet:
        if (self.choices is None) == (self.fixed_choices is None):
            raise ValueError(f"mcq {self.name}: give choices (where the options are) or fixed_choices "
                             "(the same options for every row), not both")
        if self.multi and self.score != "letter":
            raise ValueError(f"mcq {self.name}: multi-answer sets are scored by their letters; set score: letter")
        return self

    def layout(self, dev: bool = False) -> MCQLayout:
        """The columns of the test split, or of the dev split (its own settings over the set's)."""
        own = MCQLayout.model_validate(self.model_dump(include=set(MCQLayout.model_fields)))
        if not (dev and self.dev):
            return own
        given = self.dev.model_dump(include=set(MCQLayout.model_fields), exclude_none=True)
        if "choices" in given or "fixed_choices" in given:  # a dev layout's options replace the set's
            given.setdefault("choices", None)
            given.setdefault("fixed_choices", None)
        return own.model_copy(update=given)

    @property
    def dev_path(self) -> str | None:
        return self.dev.path if self.dev else None


class PerplexitySet(Strict):
    """A perplexity file: a path, or {path, name, fields, limit} for files in other layouts."""

    path: str
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_]+$",
                             description="metric names become ppl_<name>; default: the file name")
    fields: dict[str, str] = Field(
        default_factory=dict, description="canonical name -> column, as data.fields: {instruction: q, output: a}")
    limit: int | None = Field(None, ge=1, description="first n scorable rows; default eval.perplexity_limit")
    max_skipped_fraction: float = Field(
        0.05, ge=0, le=1, description="rows that cannot be scored tolerated before the trial fails")

    @model_validator(mode="before")
    @classmethod
    def _plain_path(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @field_validator("fields")
    @classmethod
    def _canonical(cls, v: dict[str, str]) -> dict[str, str]:
        return canonical_fields(v)

    @model_validator(mode="after")
    def _default_name(self) -> PerplexitySet:
        if self.name is None:
            self.name = metric_stem(self.path)
        return self


class GenerateConfig(Strict):
    """Generation on a prompt set (pred.json in the trial dir); the judge grades these outputs."""

    data: str | None = Field(None, description="prompt file (alpaca/conversations/messages/prompt rows; MT-bench "
                                               "question.jsonl: every turn answered in order); None = off")
    limit: int | None = Field(None, ge=1, description="first n prompts only")
    max_skipped_fraction: float = Field(
        0.1, ge=0, le=1, description="more turns than this share left unanswered (the conversation no longer fits "
                                     "the model's context) fail the trial")
    temperature: float = Field(0.0, ge=0, le=5, description="0 = greedy")
    top_k: int = Field(50, ge=0, description="0 = no top-k filter")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(128, ge=1, le=8192)
    num_beams: int = Field(1, ge=1, le=16)
    repetition_penalty: float = Field(1.0, gt=0)
    seed: int = 0
    batch_size: int = Field(8, ge=1)
    system: str | None = Field(None, description="system prompt prepended to every prompt")
    answers_key: str | None = Field(
        None, min_length=1, description="also write answers.json: a JSON list in the prompt file's order of "
                                        "{id, <answers_key>: answer} (a course's submission: output, answer)")

    @field_validator("data")
    @classmethod
    def _data(cls, v: str | None) -> str | None:
        return None if v is None else _must_exist(v, "generate.data", file=True)


# USD per 1M (prompt, completion) tokens of common judge models, for the cost estimate when the
# sweep file names no price. Published list prices; set eval.judge.price_* to override.
KNOWN_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-3.5-turbo": (0.50, 1.50),
}

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


SERVED_URL = "http://127.0.0.1:0/v1"  # eval.judge.serve: replaced by the driver with the started server's


class JudgeConfig(Strict):
    """LLM judge through any OpenAI-compatible endpoint. The API key is read from the env var named here."""

    enabled: bool = False
    mode: Literal["pairwise", "single"] | None = Field(
        None, description="pairwise: answer vs reference; single: one 1-10 grade. Default: the named prompt's "
                          "type, else pairwise")
    base_url: str = Field("https://api.openai.com/v1", pattern=r"^https?://")
    model: str = Field("gpt-4o-mini", min_length=1)
    api_key_env: str = Field("OPENAI_API_KEY", description="NAME of the env var holding the key (never the key)")
    template: str | None = Field(
        None, description="a prompt template file ({question}, {answer}, ...), or a JSONL of named prompts "
                          "(MT-bench judge_prompts.jsonl) from which `prompt` picks one")
    prompt: str | None = Field(None, description="name of the prompt in `template` (e.g. single-v1); its "
                                                 "'<name>-multi-turn' prompt, if any, judges later turns")
    reference_prompt: str | None = Field(
        None, description="name of the prompt for questions that have a reference (e.g. single-math-v1)")
    system: str | None = Field(None, description="system prompt; default: the named prompt's, else a built-in one; "
                                                 "'' sends none")
    output_format: Literal["[[A]]", "[[rating]]", "[[rating_a,rating_b]]"] | None = Field(
        None, description="the verdict asked for; default: the named prompt's output_format, else [[A]] when the "
                          "template asks for [[A]]/[[B]], else two scores (pairwise) or a rating (single)")
    structured: bool = Field(True, description="ask for a JSON-schema-constrained verdict where the endpoint "
                                               "accepts response_format; text parsing otherwise")
    references: str | None = Field(
        None, description="reference answers by id (MT-bench reference_answer/*.jsonl: question_id + "
                          "choices[0].turns; or id + reference/answer/output); default: generate.data's answers")
    swap: bool = Field(True, description="pairwise: judge both orders and average (cancels position bias)")
    limit: int | None = Field(None, ge=1, description="judge the first n outputs only")
    max_skipped_fraction: float = Field(
        0.1, ge=0, le=1, description="more judged answers than this share without a verdict (no reference, "
                                     "unparseable reply, failed request) fail the trial")
    concurrency: int = Field(4, ge=1, le=64)
    max_retries: int = Field(4, ge=0, le=20)
    backoff: float = Field(1.0, gt=0, description="seconds before the first retry; doubles each retry")
    backoff_max: float = Field(30.0, gt=0)
    timeout: float = Field(60.0, gt=0, description="seconds per request")
    stall_seconds: float = Field(120.0, gt=0, description="no reply succeeded for this long: the requests left "
                                                           "are not sent (a judge that hangs or is down)")
    max_seconds: float | None = Field(None, gt=0, description="total judging time per trial; the requests left "
                                                              "after it are not sent")
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(256, ge=1)
    price_prompt_per_mtok: float | None = Field(
        None, ge=0, description="USD per 1M prompt tokens (cost estimate); default: KNOWN_PRICES[model], else 0")
    price_completion_per_mtok: float | None = Field(None, ge=0, description="USD per 1M completion tokens")
    cache: bool = Field(True, description="reuse replies cached under cache_dir('judge')")
    serve: str | None = Field(
        None, description="'embedded' (the embedded SmolLM2 GGUF) or a .gguf path: the driver starts llama.cpp's "
                          "OpenAI-compatible server on 127.0.0.1 for the sweep and points the trials at it; "
                          "a base_url off this machine (a hosted judge) overrides it")

    @model_validator(mode="after")
    def _served(self) -> JudgeConfig:
        # A served judge answers on a port chosen when the sweep starts (harness/judge_server.py); until then
        # base_url is SERVED_URL, and the model is the alias the server is started with.
        if self.serve is None:
            return self
        if self.serve != "embedded" and not self.serve.endswith(".gguf"):
            raise ValueError(f"eval.judge.serve: {self.serve!r} is neither 'embedded' nor a .gguf file")
        from urllib.parse import urlparse

        if "base_url" in self.model_fields_set and urlparse(self.base_url).hostname != "127.0.0.1":
            self.serve = None  # a hosted judge given (the course's, by override): nothing to start
            return self
        if "base_url" not in self.model_fields_set:
            self.base_url = SERVED_URL
        if "model" not in self.model_fields_set:
            self.model = "judge"
        return self

    @model_validator(mode="after")
    def _known_prices(self) -> JudgeConfig:
        known = KNOWN_PRICES.get(self.model, (0.0, 0.0))  # a local judge (llama.cpp, vLLM) costs nothing
        if self.price_prompt_per_mtok is None:
            self.price_prompt_per_mtok = known[0]
        if self.price_completion_per_mtok is None:
            self.price_completion_per_mtok = known[1]
        return self

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        # A pasted key would end up in sweep.yaml and results; only a variable name is accepted.
        if not _ENV_NAME.match(v) or v.startswith(("sk-", "sk_")):
            raise ValueError("give the NAME of an environment variable (e.g. OPENAI_API_KEY), not a key")
        return v

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, v: str) -> str:
        from urllib.parse import urlparse

        # user:password@host would be saved with the config: credentials go in the api_key_env variable.
        if urlparse(v).username or urlparse(v).password:
            raise ValueError("no user:password in the URL; put the key in the variable named by api_key_env")
        return v

    @field_validator("template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        return None if v is None else _must_exist(v, "judge.template", file=True)

    @model_validator(mode="after")
    def _prompts(self) -> JudgeConfig:
        """The prompts resolve (file, names, placeholders for the mode, verdict format); mode from the prompt."""
        from trainables.evaluate.judge_prompts import PromptError

        try:
            self.mode = self.prompts().mode  # type: ignore[assignment]
        except PromptError as e:
            raise field_error("JudgeConfig", e.field, str(e)) from None
        return self

    def prompts(self) -> PromptSet:
        from trainables.evaluate.judge_prompts import prompt_set

        path = find_data(self.template) if self.template else None
        return prompt_set(path, self.prompt, self.reference_prompt, self.system, self.output_format, self.mode)

    @field_validator("references")
    @classmethod
    def _refs(cls, v: str | None) -> str | None:
        return None if v is None else _must_exist(v, "judge.references", file=True)


class EvalConfig(Strict):
    """Evaluations beyond the held-out eval_loss the training loop reports."""

    only: bool = Field(False, description="evaluate without training (baselines, decoding sweeps): trainables/eval_trial.py")
    adapter: str | None = Field(None, description="peft adapter dir loaded onto model.name (eval-only trials)")
    heldout: bool | None = Field(
        None, description="eval-only trials: also score eval_loss on the held-out rows of data.train (default "
                          "false: an evaluation needs no training pool); training trials always report it")
    batch_size: int = Field(8, ge=1, description="sequences per forward pass (perplexity, mcq)")
    max_len: int = Field(1024, ge=16, description="longest scored sequence; longer ones lose their beginning")
    icl_shots: int = Field(0, ge=0, le=32, description="k-shot: in-context examples from the training pool in front "
                                                        "of perplexity / eval_loss rows; also the shots of every "
                                                        "mcq set that sets none (exemplars from its dev split)")
    icl_seed: int = 0
    perplexity: list[PerplexitySet] = Field(
        default_factory=list, description="test files scored by perplexity: paths, or {path, fields, limit}")
    perplexity_limit: int | None = Field(None, ge=1, description="first n rows of each perplexity file")
    perplexity_every_report: bool = Field(
        False, description="score the perplexity files at every training report too (not only at the end), "
                           "so that ASHA / median stopping can stop trials on ppl_<stem>; costs one pass over "
                           "perplexity_limit rows per report")
    mcq: list[MCQSet] = Field(default_factory=list)
    mcq_shots: int | None = Field(None, ge=0, le=25, description="overrides every mcq set's shots (searchable)")
    generate: GenerateConfig = GenerateConfig()
    judge: JudgeConfig = JudgeConfig()
    lm_eval: LMEvalConfig | None = Field(None, description="lm-evaluation-harness tasks: {tasks, num_fewshot, "
                                                           "limit, include_path} -> lmeval_<task>_<metric>")

    @field_validator("perplexity")
    @classmethod
    def _ppl(cls, v: list[PerplexitySet]) -> list[PerplexitySet]:
        for p in v:
            _must_exist(p.path, "perplexity file", file=True)
        names = [p.name for p in v]
        if len(set(names)) != len(names):
            raise ValueError("perplexity files must have distinct names (metric names are ppl_<name>; "
                             "give entries a name: or distinct file names)")
        return v

    @field_validator("heldout")
    @classmethod
    def _heldout(cls, v: bool | None, info: ValidationInfo) -> bool | None:
        if v is False and not info.data.get("only"):
            raise ValueError("only eval-only trials (eval.only: true) can skip the held-out eval_loss; a training "
                             "trial always reports it: remove eval.heldout")
        return v

    @field_validator("adapter")
    @classmethod
    def _adapter(cls, v: str | None) -> str | None:
        if v is None:
            return None
        p = Path(v).expanduser()
        if not (p / "adapter_config.json").exists():
            raise ValueError(f"{v!r} is not a peft adapter directory (no adapter_config.json)")
        return str(p.resolve())

    @model_validator(mode="after")
    def _cross(self) -> EvalConfig:
        names = [m.name for m in self.mcq]
        if len(set(names)) != len(names):
            raise ValueError("mcq: set names must be distinct")
        if self.perplexity_every_report and not self.perplexity:
            raise ValueError("perplexity_every_report needs perplexity files (eval.perplexity: [...])")
        if self.judge.enabled and not self.generate.data:
            raise ValueError("judge.enabled needs generate.data (the judge grades generated answers)")
        metrics = [m for m, _ in self._produced()]
        clash = sorted({m for m in metrics if metrics.count(m) > 1})
        if clash:
            raise ValueError(f"two evaluations would both write {', '.join(clash)}; rename a set (name: ...)")
        return self

    @property
    def scores_heldout(self) -> bool:
        """Whether the trial reports eval_loss on the held-out rows: always when training, on request when eval-only."""
        return not self.only or bool(self.heldout)

    def mcq_sets(self) -> list[MCQSet]:
        """The MCQ sets with their shots resolved: eval.mcq_shots, else the set's own, else eval.icl_shots."""
        def shots(m: MCQSet) -> int:
            return self.mcq_shots if self.mcq_shots is not None else m.shots if m.shots is not None else self.icl_shots

        return [m.model_copy(update={"shots": shots(m)}) for m in self.mcq]

    def report_metrics(self) -> list[str]:
        """Evaluation metrics present in every training report (early stopping may use them)."""
        from trainables.evaluate import perplexity

        return perplexity.metrics(self) if self.perplexity_every_report else []

    def metrics(self) -> list[str]:
        """Names of the metrics these evaluations produce (search.metric must be one with a direction)."""
        return list(self.directions())

    def directions(self) -> dict[str, str | None]:
        """Every metric these evaluations produce -> "min" / "max" as its evaluator declares it, None for
        counts, times and costs (not objectives)."""
        out = dict(self._produced())
        return {**out, "eval_seconds": None} if out else out

    def _produced(self) -> list[tuple[str, str | None]]:
        """(metric, direction) of every enabled evaluator, in run order; a name twice is a clash."""
        from trainables.evaluate import EVALUATORS

        evaluators = [EVALUATORS.get(name) for name in EVALUATORS.names_in_order()]
        return [(m, ev.direction(m, self)) for ev in evaluators if ev.enabled(self) for m in ev.metrics(self)]
