"""The admin API and its CLI against the whole stack: API writes reach a real Envoy over xDS."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mcp import Client

from tests import waiting
from tests.integration.conftest import Gateway, copy_registry, free_port, running_gateway
from tests.integration.mcphttp import post, rpc

TOKEN = "integration-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def orders_doc(backend_port: int, description: str = "How many pets the store has.") -> dict[str, Any]:
    return {
        "kind": "McpServer",
        "namespace": "shop",
        "name": "orders",
        "backend": {"endpoints": [f"127.0.0.1:{backend_port}"]},
        "tools": [
            {
                "name": "countPets",
                "description": description,
                "requestTemplate": {"url": "/v1/pets", "method": "GET"},
                "responseTemplate": {"body": "{{len .}} pets"},
            }
        ],
    }


@pytest.fixture
async def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    # The control plane reads $MCPGW_ADMIN_TOKEN at start, as `mcpgw up` does.
    monkeypatch.setenv("MCPGW_ADMIN_TOKEN", TOKEN)
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    async with running_gateway(tmp_path, registry, backend_port) as running:
        yield running


def admin_url(gateway: Gateway) -> str:
    assert gateway.stack.control_plane is not None
    return f"http://127.0.0.1:{gateway.stack.control_plane.status_port}"


# The checks call the admin API, which may not answer yet (or answer with an error) at first.
eventually = functools.partial(waiting.eventually, ignore=(Exception,), interval=0.1)


async def listed_tools(url: str) -> dict[str, str]:
    async with Client(url, mode="legacy") as client:
        return {t.name: t.description or "" for t in (await client.list_tools(cache_mode="bypass")).tools}


async def served(url: str) -> bool:
    try:
        response = await post(url, rpc("tools/list"))
    except AssertionError:  # the handshake itself failed: nothing serves this path
        return False
    return response.status_code == 200 and "result" in response.text


async def test_crud_through_the_api_reaches_envoy(gateway: Gateway) -> None:
    assert gateway.stack.demo is not None
    base = admin_url(gateway)
    url = f"{gateway.stack.mcp_base_url}/mcp/shop/orders"
    document = orders_doc(gateway.stack.demo.port)
    async with httpx.AsyncClient(base_url=base, timeout=10) as admin:
        # No token, no write; a validation error names the field.
        assert (await admin.post("/v1/servers", json=document)).status_code == 401
        broken = json.loads(json.dumps(document))
        broken["tools"][0]["requestTemplate"]["method"] = "FETCH"
        response = await admin.post("/v1/servers", json=broken, headers=AUTH)
        assert response.status_code == 422
        assert [p["path"] for p in response.json()["problems"]] == ["tools[0].requestTemplate.method"]

        # The control plane's precheck: a credential it cannot read is refused before persisting.
        secret = {
            "id": "t",
            "type": "http",
            "scheme": "bearer",
            "defaultCredential": {"env": "MCPGW_UNSET_VAR"},
        }
        response = await admin.post(
            "/v1/servers", json={**document, "securitySchemes": [secret]}, headers=AUTH
        )
        assert response.status_code == 422 and "MCPGW_UNSET_VAR" not in response.text
        assert response.json()["problems"][0]["path"] == "securitySchemes[0].defaultCredential"
        assert not (gateway.registry / "shop").exists()

        # Create: served by Envoy, persisted as shop/orders.yaml in the registry directory.
        response = await admin.post("/v1/servers", json=document, headers=AUTH)
        assert response.status_code == 201, response.text
        created_etag = response.headers["ETag"]
        assert yaml.safe_load((gateway.registry / "shop" / "orders.yaml").read_text()) == document
        tools = await eventually(lambda: listed_tools(url), 10, "the new server is served")
        assert tools == {"countPets": "How many pets the store has."}
        async with Client(url, mode="legacy") as client:
            assert (await client.call_tool("countPets", {})).content[0].text == "3 pets"

        # Update one tool under the server's etag: the new description reaches tools/list.
        response = await admin.get("/v1/servers/shop/orders/tools/countPets")
        assert response.status_code == 200 and response.headers["ETag"] == created_etag
        tool = {**response.json(), "description": "Counts the pets."}
        response = await admin.put(
            "/v1/servers/shop/orders/tools/countPets", json=tool, headers={**AUTH, "If-Match": created_etag}
        )
        assert response.status_code == 200, response.text
        updated_etag = response.headers["ETag"]
        await eventually(
            lambda: _has_description(url, "Counts the pets."), 10, "the edited description is listed"
        )
        on_disk = yaml.safe_load((gateway.registry / "shop" / "orders.yaml").read_text())
        assert on_disk["tools"][0]["description"] == "Counts the pets."

        # A writer holding the old etag is refused, and told the current one.
        response = await admin.put(
            "/v1/servers/shop/orders", json=document, headers={**AUTH, "If-Match": created_etag}
        )
        assert response.status_code == 412
        assert response.headers["ETag"] == updated_etag and f'"{response.json()["etag"]}"' == updated_etag

        # Delete: Envoy stops serving it, the file is gone, the petstore is untouched.
        response = await admin.delete("/v1/servers/shop/orders", headers={**AUTH, "If-Match": updated_etag})
        assert response.status_code == 204
        assert not (gateway.registry / "shop" / "orders.yaml").exists()
        await eventually(_negate(lambda: served(url)), 10, "the deleted server is no longer served")
        assert "listPets" in await listed_tools(gateway.url)

        # The status API: the node, its address, ACKed versions, no NACK, time since the last push.
        async def acked() -> dict[str, Any] | None:
            status = (await admin.get("/status")).json()
            (node,) = status["nodes"]
            types = node["types"]
            done = all(t["version_acked"] == t["version_sent"] for t in types.values())
            return status if done else None

        status = await eventually(acked, 10, "every type ACKed")
        (node,) = status["nodes"]
        assert node["node_id"] == "test-node" and node["connected"]
        assert node["address"].startswith("127.0.0.1:")
        assert isinstance(node["seconds_since_push"], float) and 0 <= node["seconds_since_push"] < 60
        for type_status in node["types"].values():
            assert type_status["last_nack"] is None
            assert type_status["version_acked"]
            assert type_status["seconds_since_push"] is not None
        registry = status["registry"]
        assert registry["store"] == str(gateway.registry) and registry["problems"] == []
        assert [s["key"] for s in registry["servers"]] == ["default/petstore"]
        assert registry["revision"] and status["xds"]["versions"]


async def _has_description(url: str, description: str) -> bool:
    return (await listed_tools(url)).get("countPets") == description


def _negate(check: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[bool]]:
    async def negated() -> bool:
        try:
            return not await check()
        except Exception:
            return True  # an unreachable path is as gone as a 404

    return negated


# -- the CLI, as subprocesses ---------------------------------------------------------------


async def mcpgw(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> tuple[int, str, str]:
    """Run `python -m mcpgw.cli` without blocking the event loop the gateway runs on."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mcpgw.cli",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env if env is not None else os.environ.copy(),
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), timeout=60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_apply_get_delete(gateway: Gateway, tmp_path: Path) -> None:
    assert gateway.stack.demo is not None
    env = {**os.environ, "MCPGW_ADMIN_URL": admin_url(gateway)}
    env.pop("MCPGW_ADMIN_TOKEN", None)
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    auth = ["--admin-token-file", str(token_file)]
    url = f"{gateway.stack.mcp_base_url}/mcp/shop/orders"

    manifests = tmp_path / "manifests"
    manifests.mkdir()
    document = orders_doc(gateway.stack.demo.port)
    (manifests / "orders.yaml").write_text(yaml.safe_dump(document))
    petstore = yaml.safe_load((gateway.registry / "petstore.yaml").read_text())
    (manifests / "petstore.yaml").write_text(yaml.safe_dump(petstore))

    # Without the token: refused, nothing written.
    code, out, err = await mcpgw("apply", "-f", str(manifests), env=env)
    assert code == 1 and "bearer token" in err and out == ""
    assert not (gateway.registry / "shop").exists()

    code, out, err = await mcpgw("apply", "-f", str(manifests), *auth, env=env)
    assert code == 0, err
    assert out.splitlines() == ["server shop/orders created", "server default/petstore unchanged"]
    await eventually(lambda: listed_tools(url), 10, "the applied server is served")

    code, out, err = await mcpgw("apply", "-f", str(manifests / "orders.yaml"), *auth, env=env)
    assert (code, out) == (0, "server shop/orders unchanged\n"), err

    document["tools"][0]["description"] = "Applied again."
    (manifests / "orders.yaml").write_text(yaml.safe_dump(document))
    code, out, err = await mcpgw("apply", "-f", str(manifests), *auth, env=env)
    assert code == 0 and out.splitlines()[0] == "server shop/orders updated", err
    await eventually(lambda: _has_description(url, "Applied again."), 10, "the applied edit is listed")
    assert yaml.safe_load((gateway.registry / "shop" / "orders.yaml").read_text())["tools"][0][
        "description"
    ] == ("Applied again.")

    # Invalid: exit 3, file and field path on stderr, the served server untouched.
    document["tools"][0]["requestTemplate"]["method"] = "FETCH"
    (manifests / "orders.yaml").write_text(yaml.safe_dump(document))
    code, out, err = await mcpgw("apply", "-f", str(manifests / "orders.yaml"), *auth, env=env)
    assert code == 3 and out == ""
    assert f"{manifests / 'orders.yaml'}: tools[0].requestTemplate.method:" in err

    code, out, err = await mcpgw("get", "servers", "-o", "json", env=env)
    assert code == 0, err
    assert [s["key"] for s in json.loads(out)] == ["default/petstore", "shop/orders"]
    code, out, err = await mcpgw("get", "servers", env=env)
    assert code == 0 and out.split()[:4] == ["SERVER", "TOOLS", "ETAG", "PATH"]
    code, out, err = await mcpgw("get", "server", "shop/orders", env=env)
    assert code == 0 and yaml.safe_load(out)["tools"][0]["description"] == "Applied again."
    code, out, err = await mcpgw("get", "tools", "default/petstore", env=env)
    assert code == 0 and [line.split()[0] for line in out.splitlines()[1:]] == [
        "listPets",
        "getPet",
        "createPet",
        "describePet",
    ]
    code, out, err = await mcpgw("get", "tools", "shop/orders", "-o", "yaml", env=env)
    assert code == 0 and yaml.safe_load(out)[0]["name"] == "countPets"
    code, out, err = await mcpgw("get", "server", "shop/missing", env=env)
    assert code == 1 and "shop/missing" in err
    code, out, err = await mcpgw("get", "server", "no-slash", env=env)
    assert code == 2

    code, out, err = await mcpgw("delete", "tool", "default/petstore", "createPet", *auth, env=env)
    assert (code, out) == (0, "tool createPet of server default/petstore deleted\n"), err
    await eventually(lambda: _lacks(gateway.url, "createPet"), 10, "the deleted tool is no longer listed")
    code, out, err = await mcpgw("delete", "server", "shop/orders", *auth, env=env)
    assert (code, out) == (0, "server shop/orders deleted\n"), err
    await eventually(_negate(lambda: served(url)), 10, "the deleted server is no longer served")
    code, out, err = await mcpgw("delete", "server", "shop/orders", *auth, env=env)
    assert code == 1 and "shop/orders" in err


async def _lacks(url: str, tool: str) -> bool:
    tools = await listed_tools(url)
    return bool(tools) and tool not in tools


async def test_up_refuses_a_non_loopback_admin_address_without_a_token() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MCPGW_ADMIN_TOKEN"}
    code, _, err = await mcpgw("up", "--admin", f"0.0.0.0:{free_port()}", env=env)
    assert code == 1
    assert "refusing to serve the admin API on non-loopback address '0.0.0.0' without a token" in err
    code, _, err = await mcpgw("up", "--admin-token-file", "/nonexistent/token", env=env)
    assert code == 1 and "cannot read admin token file /nonexistent/token" in err
