"""The status API's view of the ADS server: per node, its address, what it ACKed, when we last pushed.

The ADS server reports raw per-stream state (ISO timestamps, gRPC peer strings); operators want
"how long since this Envoy last heard from us", so that is derived here, at read time, rather
than stored in the xDS layer.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from mcpgw.xds.sotw import iso


def _epoch(stamp: Any) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def address_of(peer: Any) -> str | None:
    """`ipv4:127.0.0.1:5555` / `ipv6:[::1]:5555` (gRPC's peer form) → `127.0.0.1:5555` / `[::1]:5555`."""
    if not isinstance(peer, str):
        return None
    scheme, sep, rest = peer.partition(":")
    return rest if sep and scheme in ("ipv4", "ipv6", "unix") else peer


def _ago(at: float | None, now: float) -> float | None:
    return None if at is None else round(max(0.0, now - at), 3)


def present_nodes(nodes: list[dict[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
    """Add `address`, per-type and per-node `seconds_since_push` to the ADS server's node list.

    Only adds keys, so anything the xDS layer reports (and readers of it) stays as it was.
    """
    now = time.time() if now is None else now
    presented = []
    for node in nodes:
        entry = dict(node)
        entry["address"] = address_of(node.get("peer"))
        types: dict[str, Any] = {}
        pushes: list[float] = []
        for name, state in (node.get("types") or {}).items():
            state = dict(state)
            pushed = _epoch(state.get("last_push_at"))
            if pushed is not None:
                pushes.append(pushed)
            state["seconds_since_push"] = _ago(pushed, now)
            types[name] = state
        entry["types"] = types
        last = max(pushes) if pushes else None
        entry["last_push_at"] = iso(last)
        entry["seconds_since_push"] = _ago(last, now)
        presented.append(entry)
    return presented
