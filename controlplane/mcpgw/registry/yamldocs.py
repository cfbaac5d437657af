"""Read YAML registry documents with limits, so one document cannot exhaust the control plane.

YAML aliases let a few hundred bytes stand for billions of nodes (the "billion laughs"): PyYAML
shares an aliased object instead of copying it, so loading is cheap, but everything that walks the
document afterwards (validation, fingerprinting, re-serialising) pays the expanded size. Deep
nesting makes the recursive walks fail. Each document is therefore composed first and its node
graph checked, before any Python object is built:

- `MAX_TEXT_CHARS`: the text of one file or request;
- `MAX_DEPTH`: nesting of mappings and sequences;
- `MAX_ALIAS_NODES`: nodes that expanding its aliases adds to a document (a document without
  aliases is bounded by its text); an alias to an enclosing node (a cycle) is refused.

Exceeding a limit raises `LimitExceeded`, a `yaml.YAMLError`, so every reader reports it where it
already reports malformed YAML.
"""

from __future__ import annotations

from typing import Any

import yaml

from mcpgw import nesting

__all__ = ["MAX_ALIAS_NODES", "MAX_DEPTH", "MAX_TEXT_CHARS", "LimitExceeded", "load_all"]

# 64 MiB of text: far above any registry file (a 100,000-tool registry is ~40 MB in YAML),
# far below what exhausts memory.
MAX_TEXT_CHARS = 64 << 20
# Registry documents nest about 8 levels (tools[].args[].items.properties...); JSON schemas in
# `outputSchema` or `properties` a few more. The control plane's one nesting limit.
MAX_DEPTH = nesting.MAX_DEPTH
# What aliases may add to a document; anchors are for sharing a few blocks, not for bulk.
MAX_ALIAS_NODES = 100_000

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LimitExceeded(yaml.YAMLError):
    """A YAML text or document is larger, deeper or more aliased than the registry accepts."""


def load_all(text: str) -> list[Any]:
    """The non-empty documents of `text`, each checked against the limits before it is built."""
    if len(text) > MAX_TEXT_CHARS:
        raise LimitExceeded(f"more than {MAX_TEXT_CHARS} characters of YAML")
    loader = _Loader(text)
    documents: list[Any] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            _check(node)
            document = loader.construct_document(node)
            if document is not None:
                documents.append(document)
    except RecursionError:
        # The composer recurses once per level, before `_check` sees the node graph.
        raise LimitExceeded(f"nested deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()
    return documents


def _check(root: yaml.Node) -> None:
    """Depth, cycles and the expanded node count, without recursion (the graph may be deep)."""
    expanded: dict[int, int] = {}
    on_path: set[int] = set()
    # (node, its children once visited, else None): post-order, so a node's size is known
    # after its children's.
    stack: list[tuple[yaml.Node, list[yaml.Node] | None]] = [(root, None)]
    while stack:
        node, children = stack.pop()
        key = id(node)
        if children is not None:
            on_path.discard(key)
            size = 1
            for child in children:
                size += expanded[id(child)]
            expanded[key] = size
            # len(expanded) counts the distinct nodes seen so far, at least those under `node`.
            if size - len(expanded) > MAX_ALIAS_NODES:
                raise LimitExceeded(f"aliases expand the document beyond {MAX_ALIAS_NODES} nodes{_at(node)}")
            continue
        if key in expanded:
            continue  # reached again through an alias: counted by its parent
        if len(on_path) >= MAX_DEPTH:
            raise LimitExceeded(f"nested deeper than {MAX_DEPTH} levels{_at(node)}")
        children = _children(node)
        if not children:
            expanded[key] = 1
            continue
        on_path.add(key)
        stack.append((node, children))
        for child in children:
            child_key = id(child)
            if child_key in on_path:
                raise LimitExceeded(f"an alias refers to a node that contains it{_at(child)}")
            if child_key not in expanded:
                stack.append((child, None))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def _at(node: yaml.Node) -> str:
    mark = node.start_mark
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
