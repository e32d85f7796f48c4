"""Config section for evaluations run at the end of a trial (composed into harness.config.SweepConfig).

Defaults run nothing extra (cheap). Each sub-section switches one evaluator on:
    perplexity: [classical_zh/public_test.json]          -> ppl_public_test, loss_public_test
    mcq: [{name: mmlu, preset: mmlu, n_per_subject: 5}]  -> mcq_mmlu_acc, mcq_acc, ...
    generate: {data: eval/evol_instruct_gt.json}         -> pred.json + gen_* metrics
    judge: {enabled: true, base_url: ..., model: ...}    -> judge_score, judge_parse_failures, ...
`only: true` makes a trial evaluate without training (baselines, decoding sweeps): the driver then
runs trainables.evaluate.eval_only.eval_trial instead of the training trial.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from trainables.data.config import Strict
from trainables.paths import find_data


def _must_exist(path: str, what: str, file: bool = False) -> str:
    """`file`: it must be a file (a directory is fine for an MCQ benchmark's folder of CSVs)."""
    found = find_data(path)
    if found is None:
        raise ValueError(f"{what} {path!r} not found (relative paths are looked up under HARNESS_DATA_DIR, "
                         "the working directory and ../shared/data)")
    if file and not found.is_file():
        raise ValueError(f"{what} {path!r} is a directory ({found}), not a file; give the data file itself")
    return path


def metric_stem(path: str) -> str:
    """`classical_zh/public_test.json` -> `public_test` (safe as a results.csv column)."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", Path(path).stem).strip("_") or "data"


# Column layouts of the benchmarks in ../shared/data/mcq; a preset fills whatever the YAML leaves out.
MCQ_PRESETS: dict[str, dict[str, Any]] = {
    "mmlu": {"path": "mcq/mmlu/test", "dev": "mcq/mmlu/dev", "question": "question",
             "choices": ["choice0", "choice1", "choice2", "choice3"], "answer": "answer"},
    "cmmlu": {"path": "mcq/cmmlu/test", "dev": "mcq/cmmlu/dev", "question": "Question",
              "choices": ["A", "B", "C", "D"], "answer": "Answer"},
    "arc": {"path": "mcq/arc/ARC-Challenge-Test.jsonl", "dev": "mcq/arc/ARC-Challenge-Dev.jsonl",
            "question": "question.stem", "choices": "question.choices", "answer": "answerKey"},
    "fineval": {"path": "mcq/fineval/val", "dev": "mcq/fineval/dev", "question": "question",
                "choices": ["A", "B", "C", "D"], "answer": "answer"},
    "ideafinbench": {"path": "mcq/ideafinbench/cfa_l1/val", "dev": "mcq/ideafinbench/cfa_l1/dev",
                     "question": "question", "choices": ["A", "B", "C", "D"], "answer": "answer"},
}


class MCQSet(Strict):
    """One multiple-choice benchmark: a file (csv/json/jsonl) or a folder of per-subject files."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_]+$", description="metric names become mcq_<name>_acc")
    preset: Literal["mmlu", "cmmlu", "arc", "fineval", "ideafinbench"] | None = None
    path: str = Field(..., description="file, or folder of <subject>[_test|_val|_dev].csv files")
    dev: str | None = Field(None, description="few-shot exemplars: same layout as path (per subject)")
    question: str = Field("question", description="column, or dotted path into nested rows (question.stem)")
    choices: list[str] | str = Field(..., description="columns [A, B, C, D], or a dotted path to a list")
    answer: str = "answer"
    answer_kind: Literal["auto", "index", "letter"] = Field("auto", description="0-based index or letter")
    shots: int = Field(0, ge=0, le=25, description="k-shot: exemplars from the dev split of the same subject")
    n_per_subject: int | None = Field(None, ge=1, description="sample this many questions per subject")
    subjects: list[str] | None = Field(None, description="restrict to these subjects")
    seed: int = 0
    score: Literal["letter", "text", "text_norm"] = Field(
        "letter", description="log-likelihood of the letter, of the choice text, or of the text per character")
    template: Literal["raw", "chat"] = Field("raw", description="plain 'Answer:' prompt or the chat template")

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

    @field_validator("dev")
    @classmethod
    def _dev(cls, v: str | None) -> str | None:
        return None if v is None else _must_exist(v, "mcq dev")

    @field_validator("choices")
    @classmethod
    def _choices(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, list) and not 2 <= len(v) <= 26:
            raise ValueError("choices: give 2 to 26 columns")
        return v

    @model_validator(mode="after")
    def _shots_need_dev(self) -> MCQSet:
        if self.shots and not self.dev:
            raise ValueError(f"mcq {self.name}: shots={self.shots} needs a dev split (dev: path)")
        return self


class GenerateConfig(Strict):
    """Generation on a prompt set (pred.json in the trial dir); the judge grades these outputs."""

    data: str | None = Field(None, description="prompt file (alpaca/conversations/messages/prompt rows); None = off")
    limit: int | None = Field(None, ge=1, description="first n prompts only")
    temperature: float = Field(0.0, ge=0, le=5, description="0 = greedy")
    top_k: int = Field(50, ge=0, description="0 = no top-k filter")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(128, ge=1, le=8192)
    num_beams: int = Field(1, ge=1, le=16)
    repetition_penalty: float = Field(1.0, gt=0)
    seed: int = 0
    batch_size: int = Field(8, ge=1)
    system: str | None = Field(None, description="system prompt prepended to every prompt")

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


class JudgeConfig(Strict):
    """LLM judge through any OpenAI-compatible endpoint. The API key is read from the env var named here."""

    enabled: bool = False
    mode: Literal["pairwise", "single"] = Field(
        "pairwise", description="pairwise: answer vs reference, two 1-10 scores; single: one 1-10 grade")
    base_url: str = Field("https://api.openai.com/v1", pattern=r"^https?://")
    model: str = Field("gpt-4o-mini", min_length=1)
    api_key_env: str = Field("OPENAI_API_KEY", description="NAME of the env var holding the key (never the key)")
    template: str | None = Field(None, description="custom prompt template file ({question}, {answer}, ...)")
    references: str | None = Field(None, description="reference answers by id; default: generate.data's answers")
    swap: bool = Field(True, description="pairwise: judge both orders and average (cancels position bias)")
    limit: int | None = Field(None, ge=1, description="judge the first n outputs only")
    concurrency: int = Field(4, ge=1, le=64)
    max_retries: int = Field(4, ge=0, le=20)
    backoff: float = Field(1.0, gt=0, description="seconds before the first retry; doubles each retry")
    backoff_max: float = Field(30.0, gt=0)
    timeout: float = Field(60.0, gt=0, description="seconds per request")
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(256, ge=1)
    price_prompt_per_mtok: float | None = Field(
        None, ge=0, description="USD per 1M prompt tokens (cost estimate); default: KNOWN_PRICES[model], else 0")
    price_completion_per_mtok: float | None = Field(None, ge=0, description="USD per 1M completion tokens")
    cache: bool = Field(True, description="reuse replies cached under cache_dir('judge')")

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
    def _template_fits_mode(self) -> JudgeConfig:
        if self.template:
            from trainables.evaluate.judge_prompts import check_template

            check_template(find_data(self.template).read_text(encoding="utf-8"), self.mode)  # type: ignore[union-attr]
        return self

    @field_validator("references")
    @classmethod
    def _refs(cls, v: str | None) -> str | None:
        return None if v is None else _must_exist(v, "judge.references", file=True)


class EvalConfig(Strict):
    """Evaluations beyond the held-out eval_loss the training loop reports."""

    only: bool = Field(False, description="evaluate without training (baselines, decoding sweeps): eval_only.eval_trial")
    adapter: str | None = Field(None, description="peft adapter dir loaded onto model.name (eval-only trials)")
    batch_size: int = Field(8, ge=1, description="sequences per forward pass (perplexity, mcq)")
    max_len: int = Field(1024, ge=16, description="longest scored sequence; longer ones lose their beginning")
    icl_shots: int = Field(0, ge=0, le=32, description="in-context examples from the training pool (baselines)")
    icl_seed: int = 0
    perplexity: list[str] = Field(default_factory=list, description="test files scored by perplexity")
    perplexity_limit: int | None = Field(None, ge=1, description="first n rows of each perplexity file")
    perplexity_every_report: bool = Field(
        False, description="score the perplexity files at every training report too (not only at the end), "
                           "so that ASHA / median stopping can stop trials on ppl_<stem>; costs one pass over "
                           "perplexity_limit rows per report")
    mcq: list[MCQSet] = Field(default_factory=list)
    mcq_shots: int | None = Field(None, ge=0, le=25, description="overrides every mcq set's shots (searchable)")
    generate: GenerateConfig = GenerateConfig()
    judge: JudgeConfig = JudgeConfig()

    @field_validator("perplexity")
    @classmethod
    def _ppl(cls, v: list[str]) -> list[str]:
        for p in v:
            _must_exist(p, "perplexity file", file=True)
        stems = [metric_stem(p) for p in v]
        if len(set(stems)) != len(stems):
            raise ValueError("perplexity files must have distinct file names (metric names are ppl_<stem>)")
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
        if self.mcq_shots and any(not m.dev for m in self.mcq):
            raise ValueError("mcq_shots needs a dev split on every mcq set")
        if self.perplexity_every_report and not self.perplexity:
            raise ValueError("perplexity_every_report needs perplexity files (eval.perplexity: [...])")
        if self.judge.enabled and not self.generate.data:
            raise ValueError("judge.enabled needs generate.data (the judge grades generated answers)")
        return self

    def mcq_sets(self) -> list[MCQSet]:
        """The MCQ sets with mcq_shots applied."""
        if self.mcq_shots is None:
            return list(self.mcq)
        return [m.model_copy(update={"shots": self.mcq_shots}) for m in self.mcq]

    def report_metrics(self) -> list[str]:
        """Evaluation metrics present in every training report (early stopping may use them)."""
        from trainables.evaluate import perplexity

        return perplexity.metrics(self) if self.perplexity_every_report else []

    def metrics(self) -> list[str]:
        """Names of the metrics these evaluations produce (valid values of search.metric)."""
        from trainables.evaluate import EVALUATORS

        names: list[str] = []
        for name in EVALUATORS.names_in_order():
            ev = EVALUATORS.get(name)
            if ev.enabled(self):
                names += ev.metrics(self)
        return names + (["eval_seconds"] if names else [])
