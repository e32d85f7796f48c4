"""The base of every sweep-config model: unknown keys are errors, numbers are finite and not true/false."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _numbers_only(annotation: Any) -> bool:
    """int, float, or a union of them (with None): a field where true/false can only be a mistake."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(a in (int, float) for a in args)
    return annotation in (int, float)


class Strict(BaseModel):
    """Unknown keys are errors (typos must not become silent defaults); numbers are finite, and true/false
    is not a number (pydantic would read `epochs: true` as 1)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, bool) and info.field_name and _numbers_only(cls.model_fields[info.field_name].annotation):
            raise ValueError("Input should be a number, not true or false")
        return v
