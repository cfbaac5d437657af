"""The gateway's resource limits and their defaults, in one place.

Every limit here protects a shared resource from one client: a connection or stream held open
with nothing sent (slowloris), a backend's request slots held by slow calls, Envoy's file
descriptors. Each one fails soft: Envoy closes the connection or answers with a status code,
and counts it in a stat (named beside each field) for the operator. `docs/security.md` lists
them; `mcpgw serve`/`up` flags set them.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

# The longest backend call a registry may configure (`backend.timeoutMs`): a slow backend holds
# one of its cluster's request slots for at most this long per call.
MAX_BACKEND_TIMEOUT_MS = 120_000
# File descriptors Envoy keeps for itself beyond client connections: its listeners, the admin
# and xDS connections, log files, and connections to backends and the session broker.
ENVOY_FD_RESERVE = 1_024
# Envoy's cap on client connections when nothing else bounds it (`mcpgw bootstrap`).
DEFAULT_MAX_CONNECTIONS = 50_000
# Envoy's heap limit for its overload manager (`mcpgw bootstrap --max-heap`): new requests get
# 503 at 98 % of it. The default suits a container with a 1.5 GiB memory limit; size it to about
# two thirds of the limit (docs/security.md, "Overload").
DEFAULT_MAX_HEAP_BYTES = 1 << 30
# Below this, Envoy's own configuration (listeners, clusters, stats, the filter's plumbing)
# would already fill most of the heap and it would refuse requests while idle.
MIN_MAX_HEAP_BYTES = 32 << 20
_SIZE_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30}


@dataclass(frozen=True)
class ListenerLimits:
    """Timeouts and per-connection limits of the MCP listener (its HttpConnectionManager)."""

    # Time for a client to send a request's complete headers; a connection that trickles them
    # (slowloris) is closed with 408 (stat `http.mcpgw.downstream_rq_header_timeout`).
    request_headers_timeout_s: float = 10.0
    # Time for a whole request to be received and answered locally, tool calls included (they
    # take at most MAX_BACKEND_TIMEOUT_MS each); 408 after (`http.mcpgw.downstream_rq_timeout`).
    # HTTP+SSE streams are not bounded by it: their request ends with its headers.
    request_timeout_s: float = 300.0
    # A stream on which nothing moves either way for this long is reset
    # (`http.mcpgw.downstream_rq_idle_timeout`); the session broker's keepalive comments keep
    # HTTP+SSE streams alive.
    stream_idle_timeout_s: float = 300.0
    # A connection with no request in flight is closed after this long
    # (`http.mcpgw.downstream_cx_idle_timeout`).
    idle_timeout_s: float = 60.0
    # HTTP/2 streams one client connection may have open at once.
    max_concurrent_streams: int = 100
    # Per backend cluster (one per REST server, one per `type: mcp` upstream host): requests in
    # flight and waiting for a connection. Over it, calls to that backend fail at once with
    # "backend busy" (`cluster.<name>.upstream_rq_pending_overflow`); other servers' backends
    # have their own.
    backend_max_requests: int = 1_024


def fd_reserve(hard: int) -> int:
    """Descriptors kept back from client connections: ENVOY_FD_RESERVE, or a quarter of a small
    limit (a container runtime's default of 1,024 would otherwise leave room for one client)."""
    return min(ENVOY_FD_RESERVE, hard // 4)


# Below this many client connections a gateway is misconfigured rather than sized: say so.
SMALL_CONNECTION_CAP = 256


def envoy_connection_cap(wanted: int = DEFAULT_MAX_CONNECTIONS, hard: int | None = None) -> int:
    """`wanted`, lowered so that Envoy cannot run out of file descriptors before reaching it.

    Envoy started by this process inherits its RLIMIT_NOFILE, raised to the hard limit
    (`raise_fd_limit`). Each client connection costs one descriptor, and an HTTP+SSE stream a
    second one towards the session broker; a cap above what the descriptors allow turns
    overload into failed accepts and failed upstream connections instead of a clean refusal.
    `hard`: the limit to plan for (default: this process's hard RLIMIT_NOFILE).
    """
    if hard is None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, (hard - fd_reserve(hard)) // 2))


def connection_cap_warning(cap: int, hard: int | None = None) -> str | None:
    """One line for stderr when the file limit leaves Envoy too few client connections."""
    if cap >= SMALL_CONNECTION_CAP:
        return None
    if hard is None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return (
        f"warning: the open-file limit ({hard}) leaves Envoy {cap} client connection(s); raise it "
        "(ulimit -n, systemd LimitNOFILE, the container runtime's nofile) or set --max-connections"
    )


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (children inherit it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
    return hard


def parse_size(text: str) -> int:
    """`512Mi`, `1Gi`, `1G`, `800MiB`, `1073741824` → bytes; raises ValueError saying what is accepted.

    Kubernetes spellings (Ki/Mi/Gi binary, k/M/G decimal), with an optional trailing `B`.
    """
    raw = text.strip()
    number = raw.rstrip("BbKkMmGgIi")
    unit = raw[len(number) :].lower().removesuffix("b")
    if not number.isdigit() or unit not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 512Mi, 1Gi or a number of bytes, got {text!r}")
    return int(number) * _SIZE_UNITS[unit]
