"""A nesting limit for every JSON/YAML document the control plane parses.

Python's own code over a parsed document recurses (`json.dumps`, `copy.deepcopy`, validation):
a few hundred levels of `[[[…]]]` raise RecursionError far from the parser, which an HTTP
handler answers with 500 and a background task dies of. `json.loads` itself raises
RecursionError past ~1,000 levels. So every parse goes through `loads`/`check_depth`, which
turn both into `TooDeep`, a ValueError with the limit and where it was exceeded.
"""

from __future__ import annotations

import json
from typing import Any

# Registry documents nest ~10 levels (server, tools, args, JSON Schema properties…); 64 leaves
# room for deep JSON Schemas and keeps every recursive walk of a document far from Python's
# recursion limit (1,000 frames).
MAX_DEPTH = 64


class TooDeep(ValueError):
    """The document nests deeper than the limit (or refers to itself through a YAML alias)."""


def depth(value: Any) -> int:
    """How deeply `value` nests lists and dicts (a scalar: 0; `[]`: 1); TooDeep for a cycle.

    Iterative, and each container is measured once: a YAML document may share one node many
    times through aliases, and walking every path through them would take exponential time.
    """
    heights: dict[int, int] = {}
    on_path: set[int] = set()
    # (container, its children still to visit) — a post-order walk without recursion.
    stack: list[tuple[Any, list[Any]]] = []

    def children(node: Any) -> list[Any]:
        items = node.values() if isinstance(node, dict) else node
        return [c for c in items if isinstance(c, dict | list)]

    if not isinstance(value, dict | list):
        return 0
    stack.append((value, children(value)))
    on_path.add(id(value))
    while stack:
        node, pending = stack[-1]
        if pending:
            child = pending.pop()
            if id(child) in heights:
                continue
            if id(child) in on_path:
                raise TooDeep("the document refers to itself (a recursive YAML alias)")
            on_path.add(id(child))
            stack.append((child, children(child)))
            continue
        stack.pop()
        on_path.discard(id(node))
        items = node.values() if isinstance(node, dict) else node
        heights[id(node)] = 1 + max((heights[id(c)] for c in items if isinstance(c, dict | list)), default=0)
    return heights[id(value)]


def check_depth(value: Any, limit: int = MAX_DEPTH) -> Any:
    """`value` itself when it nests at most `limit` levels; TooDeep otherwise."""
    if depth(value) > limit:
        raise TooDeep(f"nesting deeper than {limit} levels")
    return value


def loads(text: str | bytes, limit: int = MAX_DEPTH) -> Any:
    """`json.loads` with the nesting limit: ValueError for malformed JSON, TooDeep for deep JSON."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise TooDeep(f"nesting deeper than {limit} levels") from None
    return check_depth(value, limit)
