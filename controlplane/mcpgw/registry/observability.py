"""A server's `observability:` block: what the gateway reports about its traffic.

Metrics and the access log are always on; this block only holds what an operator opts into
per server. Today that is `logArguments`, for debugging a tool: its tools/call arguments then
appear in the access log (`mcpgw.arguments`), which they never do otherwise.
"""

from __future__ import annotations

from typing import Any

from mcpgw.registry.model import Observability
from mcpgw.registry.reader import Reader

FIELDS = {"logArguments"}


def parse_observability(r: Reader, value: Any) -> Observability:
    """The block at `observability`; absent means the defaults (no arguments logged)."""
    if value is None:
        return Observability()
    data = r.mapping(value, "observability")
    if data is None:
        return Observability()
    r.only(data, "observability", FIELDS)
    return Observability(log_arguments=r.boolean(data, "logArguments", "observability"))
