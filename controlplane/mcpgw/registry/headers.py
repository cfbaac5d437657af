"""What the registry may put in an upstream request's headers: names it may choose, values it may send.

The gateway owns the framing and routing of every request it makes to a backend. A header name
from the registry (a header template, a `position: header` argument, an `apiKey` scheme) that is
a pseudo-header, hop-by-hop, `Host`, `Content-Length`, `Expect`, `x-envoy-*` or `x-mcpgw-*` would let a client
argument smuggle a second request onto a pooled backend connection (`Transfer-Encoding`) or add
an authority (`Host`). A value with a control character other than tab is refused by Envoy (or
splits the header line), so a credential or template literal holding one could never be sent.

The filter enforces the same rules when it parses its configuration (`headerNameProblem` and
`hasControl` in wasm-filters/mcp-server/src/config.zig), and the control plane runs that parser
on every configuration it generates (`translate/filtercheck.py`): these functions give the
field path and the reason early, the filter's parser is the backstop. A unit test holds the two
equal.
"""

from __future__ import annotations

import re

__all__ = ["TOKEN", "header_name_problem", "value_problem"]

# RFC 9110 token: the characters of a header (and cookie) name.
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Names the gateway sets itself or that are hop-by-hop (RFC 9110 7.6.1), lower-case.
_OWNED = frozenset(
    (
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "http2-settings",
    )
)
_OWNED_PREFIXES = {
    "proxy-": "proxy-* headers are hop-by-hop",
    "x-envoy-": "x-envoy-* headers control Envoy",
    # The session broker trusts these because only the filter sets them.
    "x-mcpgw-": "x-mcpgw-* headers are the gateway's own",
}
# Control characters but tab (RFC 9110 field-value).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_name_problem(name: str) -> str | None:
    """Why the gateway never sends a registry-chosen header `name`, or None when it may."""
    if not name:
        return "must not be empty"
    if name.startswith(":"):
        return "pseudo-headers are set by the gateway"
    if not TOKEN.fullmatch(name):
        return "not an HTTP header name (RFC 9110 token characters only)"
    lower = name.lower()
    if lower in _OWNED:
        return "set by the gateway or hop-by-hop (it frames or routes the upstream request)"
    for prefix, reason in _OWNED_PREFIXES.items():
        if lower.startswith(prefix):
            return reason
    return None


def value_problem(value: str) -> str | None:
    """Why `value` can never be sent as a header value, or None. Never quotes the value: it may
    be a credential."""
    if _CONTROL.search(value) is None:
        return None
    # Which character and where would tell a credential's shape: not said.
    return "contains a control character (CR, LF, NUL, DEL, ...): a header value allows none but tab"
