"""Dotted paths into a sweep config (`lora.r`, `eval.mcq.medqa.shots`): set and get in a dict or a model.

In a list of named entries (eval.mcq, eval.perplexity) the part after the list is an entry's name.
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from trainables.schema.sweep import ConfigError


def named_item_model(ann: Any) -> type[BaseModel] | None:
    """M for a `list[M]` field whose items have a `name` (eval.mcq, eval.perplexity): their settings are
    addressed by the item's name, e.g. eval.mcq.medqa.shots."""
    args = typing.get_args(ann) if typing.get_origin(ann) is list else ()
    if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel) \
            and "name" in args[0].model_fields:
        return args[0]
    return None


def item_name(item: Any) -> str | None:
    """The name a list item is addressed by: its `name`, else (a perplexity entry) its file's stem."""
    from trainables.schema.eval import metric_stem

    if isinstance(item, BaseModel):
        item = item.model_dump()
    if isinstance(item, dict):
        name = item.get("name")
        return str(name) if name is not None else metric_stem(item["path"]) if isinstance(item.get("path"), str) \
            else None
    return metric_stem(item) if isinstance(item, str) else None


def _named(items: list, name: str, where: str) -> int:
    names = [item_name(it) for it in items]
    if name not in names:
        raise ConfigError([f"{where}.{name}: no entry named {name!r} in {where} (names: "
                           f"{', '.join(str(n) for n in names) or 'none'})"])
    return names.index(name)

def set_dotted(d: dict, path: str, value: Any) -> None:
    """d[a][b] = value for 'a.b'; in a list of named entries the part after the list is an entry's name
    (eval.mcq.medqa.shots sets `shots` of the mcq set named medqa; a plain perplexity path becomes {path})."""
    parts = path.split(".")
    i = 0
    while i < len(parts) - 1:
        p = parts[i]
        if isinstance(d.get(p), list):
            items = d[p]
            j = _named(items, parts[i + 1], ".".join(parts[: i + 1]))
            if i + 2 == len(parts):  # the whole entry
                items[j] = value
                return
            if isinstance(items[j], str):
                items[j] = {"path": items[j]}
            d, i = items[j], i + 2
            continue
        if not isinstance(d.get(p), dict):
            d[p] = {}
        d, i = d[p], i + 1
    d[parts[-1]] = value


def get_dotted(d: Any, path: str) -> Any:
    parts = path.split(".")
    i = 0
    while i < len(parts):
        d = d[parts[i]] if isinstance(d, dict) else getattr(d, parts[i])
        if isinstance(d, list) and i + 1 < len(parts):
            d, i = d[_named(d, parts[i + 1], ".".join(parts[: i + 1]))], i + 1
        i += 1
    return d
