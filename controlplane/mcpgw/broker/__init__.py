"""The session broker: holds HTTP+SSE (2024-11-05) streams for the gateway's filters.

The filter does all MCP work. On `GET {base_path}/sse` it mints a session and Envoy routes the
request here (cluster `mcpgw-broker`); the broker answers with the event stream. A POST to the
session's message URL, on any gateway replica, is answered by that replica's filter, which hands
the finished JSON-RPC response to its own broker (`POST /v1/sse/<channel>`); the bus (Redis
pub/sub across replicas, or in-process for one replica) carries it to the broker holding the
stream. See `mcpgw.broker.app` for the HTTP contract.
"""

from mcpgw.broker.app import DEFAULT_KEEPALIVE, DEFAULT_PORT, Broker, BrokerSettings, create_app
from mcpgw.broker.bus import Bus, BusUnavailable, MemoryBus, Stream

__all__ = [
    "DEFAULT_KEEPALIVE",
    "DEFAULT_PORT",
    "Broker",
    "BrokerSettings",
    "Bus",
    "BusUnavailable",
    "MemoryBus",
    "Stream",
    "create_app",
]
