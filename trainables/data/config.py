"""Config sections for data, subset selection and curriculum (composed into harness.config.SweepConfig)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    """Unknown keys are errors (typos must not become silent defaults)."""

    model_config = ConfigDict(extra="forbid")


class DataConfig(Strict):
    train: str = Field("alpaca/random_9k.json", description="training pool: path under HARNESS_DATA_DIR, or absolute")
    format: Literal["auto", "alpaca", "conversations", "messages"] = "auto"
    eval: str | None = Field(None, description="separate held-out file; default: eval_size rows held out of the pool")
    eval_size: int = Field(32, ge=1, description="held-out rows (fixed across trials so eval_loss is comparable)")
    split_seed: int = Field(1234, description="seed of the pool/eval split; independent of the trial seed")


class SelectionConfig(Strict):
    strategy: str = Field("random", description="a name in trainables.data.selection.SELECTION")
    n: int | None = Field(100, ge=1, description="examples to select (ignored when token_budget is set)")
    token_budget: int | None = Field(None, ge=1, description="select until this many training tokens instead of n")
    offset: int = Field(0, ge=0, description="skip this many of the ranking first: 'select from the middle'")

    @field_validator("strategy")
    @classmethod
    def _known(cls, v: str) -> str:
        from trainables.data.selection import SELECTION

        if v not in SELECTION:
            raise ValueError(f"unknown strategy {v!r}; choose one of: {', '.join(SELECTION.names())}")
        return v


class CurriculumConfig(Strict):
    order: str = Field("none", description="a name in trainables.data.curriculum.CURRICULA")

    @field_validator("order")
    @classmethod
    def _known(cls, v: str) -> str:
        from trainables.data.curriculum import CURRICULA

        if v not in CURRICULA:
            raise ValueError(f"unknown curriculum {v!r}; choose one of: {', '.join(CURRICULA.names())}")
        return v
