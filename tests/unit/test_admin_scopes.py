"""Namespace tokens: an admin token limited to one namespace, over real HTTP against a FileStore."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from mcpgw.admin.scopes import ScopesError, digest, load
from tests.unit.test_admin import Api, composed_doc, server_doc, start_api

TEAM_A = "team-a-token-0123456789"
TEAM_B = "team-b-token-0123456789"


def scoped(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def tokens_file(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "namespace-tokens.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


@pytest.fixture
async def api(tmp_path: Path) -> Api:
    """Reads closed (as off loopback); the admin token, team-a's and team-b's namespace tokens."""
    scopes = load(tokens_file(tmp_path, {"team-a": [digest(TEAM_A)], "team-b": [digest(TEAM_B)]}))
    running = await start_api(tmp_path / "api", open_reads=False, namespace_tokens=scopes)
    for namespace in ("team-a", "team-b"):
        status, body, _ = await running.call("POST", "/v1/servers", server_doc("svc", namespace))
        assert status == 201, body
    try:
        yield running
    finally:
        await running.http.close()
        await running.served.close()


async def test_a_namespace_token_reads_and_writes_its_namespace_only(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    a = scoped(TEAM_A)
    # Its own namespace: read, create, replace, tool edits, delete.
    assert (await api.call("GET", "/v1/servers/team-a/svc", auth=False, headers=a))[0] == 200
    status, body, _ = await api.call("GET", "/v1/servers?namespace=team-a", auth=False, headers=a)
    assert status == 200 and [s["key"] for s in body["servers"]] == ["team-a/svc"]
    assert (await api.call("GET", "/v1/namespaces/team-a", auth=False, headers=a))[0] == 200
    with caplog.at_level(logging.INFO):
        status, body, _ = await api.call(
            "POST", "/v1/servers", server_doc("new", "team-a"), auth=False, headers=a
        )
    assert status == 201, body
    writes = [r.fields for r in caplog.records if r.getMessage() == "admin_write"]  # type: ignore[attr-defined]
    assert writes and writes[-1]["namespace_scope"] == "team-a" and writes[-1]["status"] == 201
    status, _, _ = await api.call(
        "PUT", "/v1/servers/team-a/new", server_doc("new", "team-a"), auth=False, headers=a
    )
    assert status == 200
    assert (await api.call("DELETE", "/v1/servers/team-a/new", auth=False, headers=a))[0] == 204
    # Its own consumers too (the API keys of its namespace's clients).
    consumer = {"kind": "Consumer", "apiKeys": [{"id": "k1", "sha256": digest("a-client-key")}]}
    status, body, _ = await api.call("PUT", "/v1/consumers/team-a/alice", consumer, auth=False, headers=a)
    assert status == 201, body
    status, body, _ = await api.call("GET", "/v1/consumers?namespace=team-a", auth=False, headers=a)
    assert status == 200 and len(body["consumers"]) == 1, body

    # Another namespace: 403 on every path, nothing written or deleted.
    for method, path, body in [
        ("GET", "/v1/servers/team-b/svc", None),
        ("GET", "/v1/servers/team-b/svc/tools", None),
        ("PUT", "/v1/servers/team-b/svc", server_doc("svc", "team-b")),
        ("PUT", "/v1/servers/team-b/svc/tools/get", server_doc()["tools"][0]),
        ("DELETE", "/v1/servers/team-b/svc", None),
        ("GET", "/v1/namespaces/team-b", None),
        ("DELETE", "/v1/namespaces/team-b?cascade=true", None),
        ("POST", "/v1/servers", server_doc("intruder", "team-b")),
        # Registry-wide views and the gateway's own state are not a tenant's.
        ("GET", "/v1/servers", None),
        ("GET", "/v1/servers?namespace=team-b", None),
        ("GET", "/v1/namespaces", None),
        ("GET", "/status", None),
        ("GET", "/v1/session-keys", None),
        # Consumers: another namespace's, the global ones, the unfiltered list, POST.
        ("PUT", "/v1/consumers/team-b/eve", {"kind": "Consumer"}),
        ("PUT", "/v1/consumers/_global/eve", {"kind": "Consumer"}),
        ("GET", "/v1/consumers", None),
        ("POST", "/v1/consumers", {"kind": "Consumer", "name": "eve", "namespace": "team-a"}),
    ]:
        status, answer, _ = await api.call(method, path, body, auth=False, headers=a)
        assert status == 403, (method, path, status, answer)
        assert "team-a" in answer["error"], answer
    assert not [p for p in api.registry.rglob("*") if "intruder" in p.name]
    status, body, _ = await api.call("GET", "/v1/servers?namespace=team-b")
    assert [s["key"] for s in body["servers"]] == ["team-b/svc"]


async def test_a_scoped_write_cannot_include_another_namespaces_tools(api: Api) -> None:
    a = scoped(TEAM_A)
    document = composed_doc("borrow", "team-a", "team-b/svc")
    status, body, _ = await api.call("POST", "/v1/servers", document, auth=False, headers=a)
    assert status == 403 and "team-b/svc" in body["error"], body
    status, body, _ = await api.call("PUT", "/v1/servers/team-a/borrow", document, auth=False, headers=a)
    assert status == 403, body
    # Within its own namespace an include is fine; the admin token may still compose across.
    status, body, _ = await api.call(
        "POST", "/v1/servers", composed_doc("own", "team-a", "team-a/svc"), auth=False, headers=a
    )
    assert status == 201, body
    assert (await api.call("POST", "/v1/servers", document))[0] == 201


async def test_unknown_tokens_get_401_and_the_admin_token_keeps_full_access(api: Api) -> None:
    status, _, headers = await api.call("GET", "/v1/servers/team-a/svc", auth=False, headers=scoped("nope"))
    assert status == 401 and "Bearer" in headers["WWW-Authenticate"]
    # The digest itself is not a token.
    status, _, _ = await api.call("GET", "/v1/servers/team-a/svc", auth=False, headers=scoped(digest(TEAM_A)))
    assert status == 401
    for path in ("/v1/servers", "/v1/namespaces", "/status", "/v1/servers/team-b/svc"):
        assert (await api.call("GET", path))[0] == 200, path


async def test_namespace_tokens_alone_enable_scoped_writes(tmp_path: Path) -> None:
    scopes = load(tokens_file(tmp_path, {"default": [digest(TEAM_A)]}))
    api = await start_api(tmp_path / "api", token=None, open_reads=False, namespace_tokens=scopes)
    try:
        status, body, _ = await api.call(
            "POST", "/v1/servers", server_doc("x"), auth=False, headers=scoped(TEAM_A)
        )
        assert status == 201, body
        assert (await api.call("POST", "/v1/servers", server_doc("y"), auth=False))[0] == 401
    finally:
        await api.http.close()
        await api.served.close()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ({"team-a": ["the-token-itself"]}, "team-a[0]: must be the 64 lowercase hex digits"),
        ({"team-a": [digest(TEAM_A).upper()]}, "team-a[0]: must be the 64 lowercase hex"),
        ({"Team_A": [digest(TEAM_A)]}, "'Team_A': a namespace is lowercase"),
        ({"team-a": []}, "team-a: must be a non-empty list"),
        ({"team-a": digest(TEAM_A)}, "team-a: must be a non-empty list"),
        ({"team-a": [digest(TEAM_A)] * 17}, "team-a: at most 16 tokens"),
        (
            {"team-a": [digest(TEAM_A)], "team-b": [digest(TEAM_A)]},
            "team-b[0]: the same token is already team-a's",
        ),
        ([digest(TEAM_A)], "must map each namespace"),
        ("team-a: [", "not YAML"),
        ("", "must map each namespace"),
    ],
)
def test_a_bad_token_file_names_the_file_the_field_and_the_reason(
    tmp_path: Path, content: object, reason: str
) -> None:
    path = tokens_file(tmp_path, content)
    with pytest.raises(ScopesError) as error:
        load(path)
    assert str(error.value).startswith(f"{path}: ") and reason in str(error.value), error.value
    assert TEAM_A not in str(error.value)


def test_a_missing_token_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScopesError, match="cannot read the namespace token file"):
        load(tmp_path / "absent.yaml")
