"""The MCP Inspector CLI (2.x, on Node 22) as a real client, through real Envoy, over both transports.

The fixture installs the Inspector when it is missing (`make inspector` does the same ahead of
time); it fails, never skips, when that is impossible. Each test runs the CLI as a child process
with `--format json`: the result goes to stdout, a failure to stderr as `{"error": {...}}`, and
the exit code classifies it (0 ok, 1 error, 5 tool error).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import inspector as inspector_install
from tests.inspector import Inspector, InspectorUnavailable
from tests.integration.conftest import Gateway

CLI_TIMEOUT = 60.0
DEMO_TOOLS = ["listPets", "getPet", "createPet", "describePet"]
GET_PET_INPUT = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "description": "The pet's id."},
        "fields": {"type": "string", "description": "Comma-separated fields to return."},
    },
    "required": ["id"],
}
# `--protocol-era legacy` initializes a 2025-11-25 session; `modern` speaks the stateless
# 2026-07-28 revision (server/discover, `_meta`, Mcp-Method/Mcp-Name headers).
ERAS = ["legacy", "modern"]


@pytest.fixture(scope="session")
def inspector() -> Inspector:
    try:
        return inspector_install.ensure()
    except InspectorUnavailable as error:
        pytest.fail(f"MCP Inspector unavailable: {error}\nInstall it with `make inspector`.", pytrace=False)


@dataclass
class Run:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"{' '.join(self.argv)}\nexit {self.returncode}\nstdout: {self.stdout}\nstderr: {self.stderr}"

    def result(self) -> Any:
        """The method's result, from the `{"result": ...}` object on stdout."""
        assert self.returncode == 0, self
        return json.loads(self.stdout)["result"]

    def error(self) -> dict[str, Any]:
        """The `{"error": {...}}` envelope the CLI writes to stderr on failure."""
        assert self.returncode != 0, self
        return json.loads(self.stderr.strip().splitlines()[-1])["error"]


async def run_cli(inspector: Inspector, home: Path, url: str, transport: str, *args: str) -> Run:
    """One Inspector CLI invocation, killed if it outlives CLI_TIMEOUT."""
    argv = inspector.command(
        url, "--transport", transport, "--format", "json", "--connect-timeout", "10000", *args
    )
    home.mkdir(parents=True, exist_ok=True)
    # Its own HOME: the CLI keeps a catalog and client storage under ~/.mcp-inspector.
    env = os.environ | {"HOME": str(home), "NO_COLOR": "1"}
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(
            f"the Inspector did not finish within {CLI_TIMEOUT}s: {' '.join(argv)}"
        ) from None
    assert process.returncode is not None
    return Run(argv, process.returncode, stdout.decode(), stderr.decode())


async def assert_lists_and_calls(
    inspector: Inspector, home: Path, gateway: Gateway, url: str, *args: str
) -> None:
    """tools/list shows the demo tools and schemas; tools/call reaches the backend and returns its answer."""

    async def cli(*more: str) -> Run:
        return await run_cli(inspector, home, url, *args, *more)

    tools = {tool["name"]: tool for tool in (await cli("--method", "tools/list")).result()["tools"]}
    assert list(tools) == DEMO_TOOLS
    assert tools["getPet"]["inputSchema"] == GET_PET_INPUT
    assert tools["getPet"]["outputSchema"]["properties"]["name"] == {"type": "string"}
    assert tools["listPets"]["inputSchema"]["properties"]["limit"]["default"] == 10
    assert tools["createPet"]["inputSchema"]["required"] == ["name"]
    assert tools["describePet"]["inputSchema"]["required"] == ["id"]

    result = (
        await cli("--method", "tools/call", "--tool-name", "describePet", "--tool-arg", "id=1")
    ).result()
    assert result["content"] == [{"type": "text", "text": "Rex is a dog (id 1)."}]
    assert not result["isError"]
    seen = gateway.backend_requests[-1]
    assert (seen.method, seen.path) == ("GET", "/v1/pets/1")

    run = await cli(
        "--method", "tools/call", "--tool-name", "getPet", "--tool-arg", "id=2", "fields=name,tag"
    )
    assert run.result()["structuredContent"] == {"name": "Tom", "tag": "cat"}
    seen = gateway.backend_requests[-1]
    assert (seen.method, seen.path, seen.query) == ("GET", "/v1/pets/2", "fields=name%2Ctag")

    run = await cli("--method", "tools/call", "--tool-name", "createPet", "--tool-arg", "name=Kit", "tag=cat")
    assert json.loads(run.result()["content"][0]["text"]) == {"id": 4, "name": "Kit", "tag": "cat"}
    seen = gateway.backend_requests[-1]
    assert (seen.method, seen.path, json.loads(seen.body)) == (
        "POST",
        "/v1/pets",
        {"name": "Kit", "tag": "cat"},
    )


@pytest.mark.parametrize("era", ERAS)
async def test_inspector_lists_and_calls_over_streamable_http(
    inspector: Inspector, gateway: Gateway, tmp_path: Path, era: str
) -> None:
    await assert_lists_and_calls(
        inspector, tmp_path / "home", gateway, gateway.url, "http", "--protocol-era", era
    )


async def test_inspector_reports_errors_over_streamable_http(
    inspector: Inspector, gateway: Gateway, tmp_path: Path
) -> None:
    async def cli(*args: str) -> Run:
        return await run_cli(
            inspector, tmp_path / "home", gateway.url, "http", "--method", "tools/call", *args
        )

    # An unknown tool: the CLI looks the name up in tools/list first and stops there (exit 5),
    # so no tools/call is sent (the gateway's own -32602 for it is covered by test_gateway).
    run = await cli("--tool-name", "nope")
    assert run.returncode == 5, run
    assert run.error() == {"code": "tool_not_found", "message": "Tool 'nope' not found on server."}

    # A missing argument: in 2025-11-25 a tool execution error (SEP-1303), so the CLI shows the
    # gateway's message as the tool's result (exit 5), as a model would read it.
    run = await cli("--tool-name", "getPet")
    assert run.returncode == 5, run
    assert json.loads(run.stdout)["result"] == {
        "content": [{"type": "text", "text": "missing required argument: id"}],
        "isError": True,
    }
    assert run.error()["code"] == "tool_is_error"

    # A tool result with isError (the backend's 404): exit 5, the result still on stdout.
    run = await cli("--tool-name", "describePet", "--tool-arg", "id=99")
    assert run.returncode == 5, run
    assert json.loads(run.stdout)["result"] == {
        "content": [{"type": "text", "text": "No such pet: pet 99 not found"}],
        "isError": True,
    }
    assert run.error()["code"] == "tool_is_error"
    # Only the last call reached the backend.
    assert [(seen.method, seen.path) for seen in gateway.backend_requests] == [("GET", "/v1/pets/99")]

    # No server at that path: Envoy's 404 reaches the CLI as an HTTP error at initialize.
    absent = f"{gateway.stack.mcp_base_url}/mcp/default/absent"
    run = await run_cli(inspector, tmp_path / "home", absent, "http", "--method", "tools/list")
    assert run.returncode == 1, run
    assert run.error()["status"] == 404 and "no MCP server at this path" in run.error()["message"]


async def test_inspector_lists_and_calls_over_sse(
    inspector: Inspector, gateway: Gateway, tmp_path: Path
) -> None:
    await assert_lists_and_calls(inspector, tmp_path / "home", gateway, f"{gateway.url}/sse", "sse")
