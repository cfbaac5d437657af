"""The **fastmcp** peer: `FastMCP.from_openapi` over the bench's REST API, Streamable HTTP.

Run with the interpreter of FastMCP's own venv (`.cache/peers/fastmcp-<version>/`, made by
`peers_servers.ensure_venv`), never the project's:

    .cache/peers/fastmcp-4.2.3/bin/python bench/peers_fastmcp.py --port 8000 --openapi openapi.json

FastMCP's defaults throughout: its default HTTP client for the spec's server URL, its default
route map (every operation a tool), `run(transport="http")` with stateful sessions and SSE
answers, one uvicorn process. Only the banner and uvicorn's access log are off (as for the
other Python servers in the bench).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fastmcp import FastMCP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--openapi", type=Path, required=True, help="the OpenAPI document (JSON)")
    args = parser.parse_args()
    server = FastMCP.from_openapi(json.loads(args.openapi.read_text()), name="pets")
    server.run(
        transport="http",
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        show_banner=False,
        uvicorn_config={"access_log": False},
    )


if __name__ == "__main__":
    main()
