"""JSON from outside, parsed without letting its nesting take a task down.

`json.loads` recurses once per level and raises `RecursionError` near Python's recursion limit
(about 1,000 levels): no caller expects that, so a deep body became a 500, or ended the task
reading an upstream's stream. Here it is a `ValueError` like any other text that does not parse.
The C parser gives up at that depth, so the memory a deep text costs stays bounded by its size.
"""

from __future__ import annotations

import json
from typing import Any


class TooDeep(ValueError):
    pass


def loads(text: str | bytes | bytearray) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise TooDeep("JSON nested too deep to parse") from None
