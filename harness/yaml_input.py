"""YAML we are given (sweep files, `key=value` overrides): a safe loader (no tags execute) that refuses
what would silently change or blow up the sweep:
  - a key given twice in one mapping (the second would replace the first, e.g. a whole `train:` section);
  - aliases that refer to themselves (`a: &a [*a]`), which no program can walk to its end;
  - aliases nested so that the document expands to more than MAX_VALUES values (a 443-byte "billion
    laughs" file took 10.5 s and 489 MB before validation refused it). The size is counted on the parsed
    node graph, each shared node once per use, without building the expansion.
Every refusal is a yaml.YAMLError carrying the line, so callers report it like any other YAML error.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_VALUES = 100_000  # a real sweep holds a few hundred; a grid of 100k levels is no sweep either


class Refused(ConstructorError):
    """Valid YAML that a sweep must not be (duplicate keys, self-referring or exploding aliases)."""


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: Node, deep: bool = False) -> dict:
        if isinstance(node, MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden by design
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise Refused(None, None, f"key {key!r} appears twice in one mapping (line {seen[key] + 1} "
                                      f"and line {key_node.start_mark.line + 1}); the second would replace the "
                                      "first: merge them into one", key_node.start_mark)
                    seen[key] = key_node.start_mark.line
                except TypeError:  # an unhashable key: the constructor says so itself
                    pass
        return super().construct_mapping(node, deep=deep)


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def expanded_size(root: Node, limit: int = MAX_VALUES) -> int:
    """How many values `root` stands for with every alias expanded (counted once per shared node, so
    it is fast). Raises Refused for an alias inside its own anchor, or past `limit`."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
            if sizes[key] > limit:
                raise Refused(None, None, f"its aliases expand to more than {limit:,} values; write the "
                              "values out, or use fewer nested aliases", node.start_mark)
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise Refused(None, None, "an alias refers to the mapping or list that contains it (it would "
                          "never end); remove the alias", node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def load(text: str) -> Any:
    """The document in `text` (None when it holds none), or a yaml.YAMLError."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()
