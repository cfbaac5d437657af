"""The admin API over real HTTP (127.0.0.1, a free port) against a FileStore in a temporary directory."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from mcpgw.admin.app import create_app
from mcpgw.admin.auth import AdminConfigError, Authorizer, check_bind, is_loopback, load_token
from mcpgw.admin.status import address_of, present_nodes
from mcpgw.httpserve import ServedApp, serve
from mcpgw.registry.filesource import FileStore
from mcpgw.registry.model import RegistrySnapshot
from mcpgw.registry.secrets import UNAVAILABLE, resolve_off_loop

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def composed_doc(name: str, namespace: str, target: str) -> dict[str, Any]:
    """A server offering the tools of `target` beside its own (renamed so the names stay unique)."""
    document = server_doc(name, namespace, include=[{"server": target}])
    document["tools"][0]["name"] = "own"
    return document


def server_doc(name: str = "svc", namespace: str = "default", **overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "kind": "McpServer",
        "namespace": namespace,
        "name": name,
        "backend": {"endpoints": ["127.0.0.1:8080"]},
        "tools": [
            {
                "name": "get",
                "description": "Get an item.",
                "args": [{"name": "id", "type": "integer", "required": True, "position": "path"}],
                "requestTemplate": {"url": "/items/{{.args.id}}", "method": "GET"},
            }
        ],
    }
    document.update(overrides)
    return document


@dataclass
class Api:
    served: ServedApp
    store: FileStore
    registry: Path
    http: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return self.served.url + path

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        all_headers = {**(AUTH if auth else {}), **(headers or {})}
        kwargs: dict[str, Any] = {"headers": all_headers}
        if isinstance(body, (str, bytes)):
            kwargs["data"] = body
        elif body is not None:
            kwargs["json"] = body
        async with self.http.request(method, self.url(path), **kwargs) as response:
            text = await response.text()
            try:
                payload = json.loads(text) if text else None
            except ValueError:
                payload = text
            return response.status, payload, response.headers


async def start_api(
    tmp_path: Path, token: str | None = TOKEN, open_reads: bool = True, namespace_tokens: Any = None
) -> Api:
    registry = tmp_path / "registry"
    registry.mkdir(parents=True)
    (registry / "svc.yaml").write_text(yaml.safe_dump(server_doc()))
    store = FileStore(registry)
    await store.load()
    status = {"registry": {"store": store.description}, "nodes": []}
    app = create_app(store, lambda: status, Authorizer(token, open_reads, namespace_tokens))
    served = await serve(app, "127.0.0.1", 0)
    return Api(served, store, registry, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)))


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    running = await start_api(tmp_path)
    try:
        yield running
    finally:
        await running.http.close()
        await running.served.close()


def etag(headers: Any) -> str:
    value = headers["ETag"]
    assert value.startswith('"') and value.endswith('"')
    return str(value[1:-1])


async def test_read_server_list_and_document_with_etag(api: Api) -> None:
    status, body, _ = await api.call("GET", "/v1/servers", auth=False)
    assert status == 200
    (summary,) = body["servers"]
    assert summary["key"] == "default/svc" and summary["tools"] == ["get"]
    assert summary["etag"] == api.store.entry("default/svc").etag

    status, body, headers = await api.call("GET", "/v1/servers/default/svc", auth=False)
    assert status == 200 and body == server_doc()
    assert etag(headers) == summary["etag"]

    status, body, _ = await api.call("GET", "/v1/servers/default/nope", auth=False)
    assert status == 404 and "default/nope" in body["error"]
    # YAML on request, for humans.
    async with api.http.get(api.url("/v1/servers/default/svc"), headers={"Accept": "application/yaml"}) as r:
        assert r.content_type == "application/yaml"
        assert yaml.safe_load(await r.text()) == server_doc()


async def test_create_persists_a_file_and_refuses_duplicates(api: Api) -> None:
    document = server_doc("orders", "shop")
    status, body, headers = await api.call("POST", "/v1/servers", document)
    assert status == 201, body
    assert headers["Location"] == "/v1/servers/shop/orders"
    assert body["key"] == "shop/orders" and etag(headers) == body["etag"]
    # FileStore: a new server becomes <namespace>/<name>.yaml in the registry directory.
    assert yaml.safe_load((api.registry / "shop" / "orders.yaml").read_text()) == document
    assert api.store.snapshot is not None and api.store.snapshot.server("shop/orders") is not None

    status, body, _ = await api.call("POST", "/v1/servers", document)
    assert status == 409 and body["etag"] == etag(headers)


async def test_put_updates_under_if_match_and_412_on_stale_etag(api: Api) -> None:
    _, _, headers = await api.call("GET", "/v1/servers/default/svc")
    old = etag(headers)
    changed = server_doc(description="v2")
    status, body, headers = await api.call(
        "PUT", "/v1/servers/default/svc", changed, headers={"If-Match": f'"{old}"'}
    )
    assert status == 200, body
    new = etag(headers)
    assert new != old and body["etag"] == new
    assert yaml.safe_load((api.registry / "svc.yaml").read_text())["description"] == "v2"

    status, body, headers = await api.call(
        "PUT", "/v1/servers/default/svc", server_doc(description="v3"), headers={"If-Match": f'"{old}"'}
    )
    assert status == 412 and body["etag"] == new and etag(headers) == new
    assert yaml.safe_load((api.registry / "svc.yaml").read_text())["description"] == "v2"

    status, _, _ = await api.call("DELETE", "/v1/servers/default/svc", headers={"If-Match": f'"{old}"'})
    assert status == 412
    # If-None-Match: * refuses to replace; If-Match on a missing server fails too.
    status, _, _ = await api.call("PUT", "/v1/servers/default/svc", changed, headers={"If-None-Match": "*"})
    assert status == 412
    status, _, _ = await api.call(
        "PUT", "/v1/servers/default/x", server_doc("x"), headers={"If-Match": '"abc"'}
    )
    assert status == 412


async def test_put_creates_fills_identity_from_url_and_refuses_a_mismatch(api: Api) -> None:
    document = server_doc()
    del document["name"], document["namespace"]
    status, body, _ = await api.call("PUT", "/v1/servers/team/svc2", document)
    assert status == 201 and body["key"] == "team/svc2"
    status, body, _ = await api.call("PUT", "/v1/servers/team/svc3", server_doc("other", "team"))
    assert status == 422
    assert [(p["path"], p["reason"]) for p in body["problems"]] == [
        ("name", "must match the URL ('svc3'), got 'other'")
    ]


async def test_writes_need_the_bearer_token(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        status, body, response_headers = await api.call(
            "POST", "/v1/servers", server_doc("x"), headers=headers, auth=False
        )
        assert status == 401 and TOKEN not in json.dumps(body)
        assert response_headers["WWW-Authenticate"].startswith("Bearer")
    for method, path in (
        ("PUT", "/v1/servers/default/svc"),
        ("DELETE", "/v1/servers/default/svc"),
        ("PUT", "/v1/servers/default/svc/tools/get"),
        ("DELETE", "/v1/servers/default/svc/tools/get"),
        ("PUT", "/v1/namespaces/default"),
        ("DELETE", "/v1/namespaces/default?cascade=true"),
    ):
        status, _, _ = await api.call(method, path, {"name": "get"}, auth=False)
        assert status == 401, (method, path)
    assert api.store.entry("default/svc").document == server_doc()
    assert (await api.call("PUT", "/v1/servers/default/svc", server_doc(description="ok")))[0] == 200
    assert "admin_unauthorized" in caplog.text and "admin_write" in caplog.text
    assert TOKEN not in caplog.text


async def test_without_a_token_writes_are_disabled_and_closed_reads_need_one(tmp_path: Path) -> None:
    disabled = await start_api(tmp_path / "a", token=None)
    closed = await start_api(tmp_path / "b", open_reads=False)
    try:
        status, body, _ = await disabled.call("POST", "/v1/servers", server_doc("x"))
        assert status == 403 and "no admin token" in body["error"]
        assert (await disabled.call("GET", "/v1/servers", auth=False))[0] == 200

        assert (await closed.call("GET", "/v1/servers", auth=False))[0] == 401
        assert (await closed.call("GET", "/v1/servers/default/svc", auth=False))[0] == 401
        assert (await closed.call("GET", "/v1/servers"))[0] == 200
        # /status names files and peer addresses: off loopback it needs the token too.
        assert (await closed.call("GET", "/status", auth=False))[0] == 401
        assert (await closed.call("GET", "/status"))[0] == 200
        assert (await disabled.call("GET", "/status", auth=False))[0] == 200
        # Health says nothing and stays open.
        assert (await closed.call("GET", "/healthz", auth=False))[0] == 200
    finally:
        for api in (disabled, closed):
            await api.http.close()
            await api.served.close()


async def test_validation_errors_are_422_with_field_paths(api: Api) -> None:
    document = server_doc("bad")
    document["tools"][0]["args"][0]["type"] = "int"
    document["backend"] = {"endpoints": []}
    status, body, _ = await api.call("POST", "/v1/servers", document)
    assert status == 422 and body["error"]
    paths = {p["path"] for p in body["problems"]}
    assert "tools[0].args[0].type" in paths and any(p.startswith("backend") for p in paths)
    assert all(set(p) == {"file", "path", "reason"} for p in body["problems"])
    assert not (api.registry / "default" / "bad.yaml").exists()


async def test_a_store_precheck_refusal_is_422_and_nothing_is_written(api: Api) -> None:
    # The control plane installs a precheck (credentials readable, Envoy config valid); any
    # Invalid it raises must reach the client as a 422 with its problems.
    async def precheck(snapshot: RegistrySnapshot, changed: str) -> None:
        await resolve_off_loop(snapshot)

    api.store.precheck = precheck
    document = server_doc(
        "creds",
        securitySchemes=[
            {
                "id": "t",
                "type": "http",
                "scheme": "bearer",
                "defaultCredential": {"env": "MCPGW_TEST_UNSET_VAR"},
            }
        ],
    )
    status, body, _ = await api.call("POST", "/v1/servers", document)
    assert status == 422, body
    # The field, never why: whether a file or variable exists is the control plane's business.
    assert body["problems"][0]["reason"] == UNAVAILABLE
    assert body["problems"][0]["path"] == "securitySchemes[0].defaultCredential"
    assert not (api.registry / "default" / "creds.yaml").exists()


async def test_malformed_bodies_are_400_and_yaml_is_accepted(api: Api) -> None:
    yaml_headers = {"Content-Type": "application/yaml"}
    status, body, _ = await api.call(
        "POST", "/v1/servers", "{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and "malformed JSON" in body["error"]
    status, body, _ = await api.call("POST", "/v1/servers", "a: [1", headers=yaml_headers)
    assert status == 400 and "malformed YAML" in body["error"]
    status, body, _ = await api.call("POST", "/v1/servers", "a: 1\n---\nb: 2\n", headers=yaml_headers)
    assert status == 400 and "exactly one" in body["error"]
    status, body, _ = await api.call("POST", "/v1/servers", "", headers=yaml_headers)
    assert status == 400
    status, body, _ = await api.call(
        "POST", "/v1/servers", yaml.safe_dump(server_doc("y")), headers=yaml_headers
    )
    assert status == 201, body


@pytest.mark.parametrize("levels", [65, 500, 5_000, 100_000])
async def test_deep_bodies_are_400_on_every_parsing_endpoint(api: Api, levels: int) -> None:
    """Deep nesting is refused with the limit named, as JSON and as YAML, never a 500."""
    deep_json = '{"name": "deep", "tools": ' + "[" * levels + "]" * levels + "}"
    deep_yaml = "name: deep\ntools: " + "[" * levels + "]" * levels + "\n"
    targets = [
        ("POST", "/v1/servers"),
        ("PUT", "/v1/servers/default/svc"),
        ("PUT", "/v1/servers/default/svc/tools/get"),
    ]
    for method, path in targets:
        for body, content_type in ((deep_json, "application/json"), (deep_yaml, "application/yaml")):
            status, answer, _ = await api.call(method, path, body, headers={"Content-Type": content_type})
            assert status == 400, (method, path, content_type, status, answer)
            assert "levels" in answer["error"] or "nesting depth" in answer["error"], answer
    assert api.store.entry("default/svc").document == server_doc()


async def test_a_recursive_yaml_alias_is_400(api: Api) -> None:
    status, body, _ = await api.call(
        "POST", "/v1/servers", "name: loop\ntools: &a [*a]\n", headers={"Content-Type": "application/yaml"}
    )
    assert status == 400 and "alias" in body["error"], body


async def test_an_oversized_body_is_413_json(api: Api) -> None:
    status, body, _ = await api.call(
        "POST", "/v1/servers", b"[" + b" " * (16 << 20) + b"]", headers={"Content-Type": "application/json"}
    )
    assert status == 413 and "larger than" in body["error"], body


async def test_single_tool_crud_rewrites_its_server_document(api: Api) -> None:
    status, tool, headers = await api.call("GET", "/v1/servers/default/svc/tools/get")
    assert status == 200 and tool["description"] == "Get an item."
    server_etag = etag(headers)
    assert server_etag == api.store.entry("default/svc").etag
    status, body, headers = await api.call("GET", "/v1/servers/default/svc/tools")
    assert status == 200 and [t["name"] for t in body["tools"]] == ["get"]
    assert (await api.call("GET", "/v1/servers/default/svc/tools/nope"))[0] == 404

    tool["description"] = "Fetch one item."
    status, body, headers = await api.call(
        "PUT", "/v1/servers/default/svc/tools/get", tool, headers={"If-Match": f'"{server_etag}"'}
    )
    assert status == 200 and body == tool
    assert etag(headers) == api.store.entry("default/svc").etag != server_etag
    on_disk = yaml.safe_load((api.registry / "svc.yaml").read_text())
    assert on_disk["tools"][0]["description"] == "Fetch one item."
    # The old etag is stale now, for tools as for servers.
    status, body, _ = await api.call(
        "PUT", "/v1/servers/default/svc/tools/get", tool, headers={"If-Match": f'"{server_etag}"'}
    )
    assert status == 412 and body["etag"] == etag(headers)

    added = {"name": "list", "requestTemplate": {"url": "/items", "method": "GET"}}
    status, _, _ = await api.call("PUT", "/v1/servers/default/svc/tools/list", added)
    assert status == 201
    assert [t.name for t in api.store.entry("default/svc").server.tools] == ["get", "list"]

    bad = {"name": "broken", "requestTemplate": {"url": "/x", "method": "FETCH"}}
    status, body, _ = await api.call("PUT", "/v1/servers/default/svc/tools/broken", bad)
    assert status == 422 and body["problems"][0]["path"].startswith("tools[2].")
    status, body, _ = await api.call("PUT", "/v1/servers/default/svc/tools/a", {"name": "b"})
    assert status == 422 and body["problems"][0]["path"] == "name"

    status, _, headers = await api.call("DELETE", "/v1/servers/default/svc/tools/list")
    assert status == 204 and etag(headers) == api.store.entry("default/svc").etag
    assert (await api.call("DELETE", "/v1/servers/default/svc/tools/list"))[0] == 404
    assert (await api.call("PUT", "/v1/servers/default/none/tools/list", added))[0] == 404
    assert [t["name"] for t in yaml.safe_load((api.registry / "svc.yaml").read_text())["tools"]] == ["get"]


async def test_delete_server_and_includes_are_checked(api: Api) -> None:
    composed = composed_doc("composed", "default", "default/svc")
    assert (await api.call("POST", "/v1/servers", composed))[0] == 201
    status, body, _ = await api.call("DELETE", "/v1/servers/default/svc")
    assert status == 422 and body["problems"]
    assert (await api.call("DELETE", "/v1/servers/default/composed"))[0] == 204
    assert (await api.call("DELETE", "/v1/servers/default/svc"))[0] == 204
    assert (await api.call("DELETE", "/v1/servers/default/svc"))[0] == 404
    assert not (api.registry / "svc.yaml").exists()
    assert (await api.call("GET", "/v1/servers"))[1] == {"servers": []}


async def test_namespaces_are_implied_by_servers(api: Api) -> None:
    for name in ("a", "b"):
        assert (await api.call("POST", "/v1/servers", server_doc(name, "team")))[0] == 201
    # team/b offers a tool of team/a: a cascade has to delete b before a.
    b = composed_doc("b", "team", "team/a")
    assert (await api.call("PUT", "/v1/servers/team/b", b))[0] == 200

    status, body, _ = await api.call("GET", "/v1/namespaces")
    assert body == {
        "namespaces": [
            {"name": "default", "servers": ["default/svc"]},
            {"name": "team", "servers": ["team/a", "team/b"]},
        ]
    }
    assert (await api.call("GET", "/v1/namespaces/team"))[1] == {
        "name": "team",
        "servers": ["team/a", "team/b"],
    }
    assert (await api.call("GET", "/v1/namespaces/empty"))[0] == 404
    assert (await api.call("PUT", "/v1/namespaces/team"))[0] == 200
    status, body, _ = await api.call("PUT", "/v1/namespaces/empty")
    assert status == 409 and "only through their servers" in body["error"]
    assert (await api.call("PUT", "/v1/namespaces/Bad_Name"))[0] == 422

    status, body, _ = await api.call("DELETE", "/v1/namespaces/team")
    assert status == 409 and body["servers"] == ["team/a", "team/b"]
    status, body, _ = await api.call("DELETE", "/v1/namespaces/team?cascade=true")
    assert status == 200 and body == {"deleted": ["team/b", "team/a"]}
    assert (await api.call("GET", "/v1/namespaces/team"))[0] == 404
    assert (await api.call("DELETE", "/v1/namespaces/team?cascade=true"))[0] == 404
    assert not list((api.registry / "team").glob("*.yaml"))


async def test_cascade_stops_when_another_namespace_still_includes_a_server(api: Api) -> None:
    assert (await api.call("POST", "/v1/servers", server_doc("a", "team")))[0] == 201
    user = composed_doc("user", "default", "team/a")
    assert (await api.call("POST", "/v1/servers", user))[0] == 201
    status, body, _ = await api.call("DELETE", "/v1/namespaces/team?cascade=true")
    assert status == 422 and body["remaining"] == ["team/a"] and body["problems"]


def test_loopback_rules_and_token_sources(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("admin.internal")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "t", tls=True)
    with pytest.raises(AdminConfigError, match="non-loopback"):
        check_bind("0.0.0.0", None)

    path = tmp_path / "token"
    path.write_text("from-file\n")
    assert load_token(path, {"MCPGW_ADMIN_TOKEN": "from-env"}) == "from-file"
    assert load_token(None, {"MCPGW_ADMIN_TOKEN": " from-env "}) == "from-env"
    assert load_token(None, {}) is None
    assert load_token(None, {}, explicit="x") == "x"
    with pytest.raises(AdminConfigError, match="cannot read"):
        load_token(tmp_path / "missing", {})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(AdminConfigError, match="empty"):
        load_token(tmp_path / "empty", {})
    assert TOKEN not in repr(Authorizer(TOKEN, open_reads=True))


def test_status_presentation_adds_address_and_time_since_push() -> None:
    nodes = [
        {
            "node_id": "edge-1",
            "connected": True,
            "peer": "ipv4:127.0.0.1:5555",
            "types": {
                "cds": {"version_acked": "v1", "last_push_at": "2026-01-01T00:00:00.000Z", "last_nack": None},
                "lds": {"version_acked": "v2", "last_push_at": "2026-01-01T00:00:02.500Z", "last_nack": None},
                "eds": {"version_acked": None, "last_push_at": None, "last_nack": None},
            },
        },
        {"node_id": "gone", "connected": False, "types": {"cds": {"last_nack": {"error": "bad"}}}},
    ]
    now = 1767225610.0  # 2026-01-01T00:00:10Z
    live, gone = present_nodes(nodes, now)
    assert live["address"] == "127.0.0.1:5555"
    assert live["types"]["cds"]["seconds_since_push"] == 10.0
    assert live["types"]["lds"]["seconds_since_push"] == 7.5
    assert live["types"]["eds"]["seconds_since_push"] is None
    assert (live["last_push_at"], live["seconds_since_push"]) == ("2026-01-01T00:00:02.500Z", 7.5)
    assert gone["address"] is None and gone["seconds_since_push"] is None
    assert gone["types"]["cds"]["last_nack"] == {"error": "bad"}
    assert address_of("ipv6:[::1]:80") == "[::1]:80"
