"""The **python** scenario: what a team writes without a gateway.

A `mcp` SDK (2.x) `MCPServer` serving Streamable HTTP in its stateless, JSON-response mode
(no session, no SSE: the cheapest mode the SDK has, and the one closest to what the filter
does), whose one tool makes the same REST call as every other scenario with a shared
`httpx.AsyncClient` (keep-alive pool). Served by uvicorn, one process, no access log.

    python bench/dataplane_python.py --port 8000 --backend http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import logging

import httpx
import uvicorn
from dataplane_configs import TOOL_DESCRIPTION, TOOL_NAME
from mcp.server.mcpserver import MCPServer


def build_app(backend: str) -> object:
    server = MCPServer("pets")
    client = httpx.AsyncClient(
        base_url=backend, timeout=5.0, limits=httpx.Limits(max_keepalive_connections=64)
    )

    @server.tool(name=TOOL_NAME, description=TOOL_DESCRIPTION, structured_output=False)
    async def get_pet(id: int) -> str:
        response = await client.get(f"/v1/pets/{id}")
        return response.text

    return server.streamable_http_app(streamable_http_path="/mcp", json_response=True, stateless_http=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", required=True, help="base URL of the REST backend")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    uvicorn.run(
        build_app(args.backend),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
