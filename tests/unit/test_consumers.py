"""Consumers and the `auth:` block: validation, the file and admin-API stores, the filter's
`auth` configuration, and `mcpgw consumers` (files and admin API)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcpgw import cli
from mcpgw.registry.consumers import MAX_API_KEYS, parse_consumer
from mcpgw.registry.filesource import FileStore, load_directory
from mcpgw.registry.reader import Invalid
from mcpgw.registry.redisstore import RedisStore
from mcpgw.registry.validate import parse_server
from mcpgw.translate.filterconfig import filter_config
from tests.redisserver import RedisServer
from tests.unit import test_admin
from tests.unit.test_admin import TOKEN, Api, server_doc
from tests.unit.test_redisstore import following, until

# The admin API over real HTTP on a FileStore, as test_admin.py runs it.
api = test_admin.api

KEY = "mcpgw_unit-test-key-0123456789abcdefghijklmnopqrstuvwxyz"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def consumer_doc(name: str = "alice", namespace: str | None = "default", **fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"apiVersion": "mcpgw/v1", "kind": "Consumer", "name": name}
    if namespace is not None:
        document["namespace"] = namespace
    document["apiKeys"] = [{"id": "k-1", "sha256": sha(f"{namespace}/{name}")}]
    document.update(fields)
    return document


def problems(document: Any) -> list[tuple[str, str]]:
    with pytest.raises(Invalid) as error:
        parse_consumer(document, "c.yaml")
    assert all(p.file == "c.yaml" for p in error.value.problems)
    return [(p.path, p.reason) for p in error.value.problems]


def test_a_consumer_parses_with_its_scope_groups_and_hashes() -> None:
    alice = parse_consumer(consumer_doc(groups=["readers", "ops"]), "c.yaml")
    assert (alice.key, alice.namespace, alice.groups) == (
        "consumers/default/alice",
        "default",
        ("readers", "ops"),
    )
    assert [k.id for k in alice.api_keys] == ["k-1"]
    assert parse_consumer(consumer_doc(namespace=None)).key == "consumers/*/alice"
    # No key in any representation of it.
    assert KEY not in repr(parse_consumer(consumer_doc(apiKeys=[{"id": "k", "sha256": sha(KEY)}])))


@pytest.mark.parametrize(
    ("fields", "path", "reason"),
    [
        ({"apiKeys": [{"id": "k", "key": KEY}]}, "apiKeys[0].key", "plaintext key"),
        ({"apiKeys": [{"id": "k", "sha256": KEY}]}, "apiKeys[0].sha256", "looks like a plaintext key"),
        ({"apiKeys": [{"id": "k", "sha256": "ab" * 31}]}, "apiKeys[0].sha256", "64 hex digits, got 62"),
        ({"apiKeys": [{"id": "k", "sha256": sha("x").upper()}]}, "apiKeys[0].sha256", "lowercase"),
        ({"apiKeys": [{"id": "k", "sha256": "zz" * 32}]}, "apiKeys[0].sha256", "plaintext"),
        ({"apiKeys": [{"id": "k"}]}, "apiKeys[0].sha256", "is required"),
        (
            {"apiKeys": [{"id": "k", "sha256": sha("a")}, {"id": "k", "sha256": sha("b")}]},
            "apiKeys[1].id",
            "duplicate key id",
        ),
        (
            {"apiKeys": [{"id": "a", "sha256": sha("a")}, {"id": "b", "sha256": sha("a")}]},
            "apiKeys[1].sha256",
            "same key hash",
        ),
        (
            {"apiKeys": [{"id": f"k{i}", "sha256": sha(str(i))} for i in range(MAX_API_KEYS + 1)]},
            "apiKeys",
            "at most 16",
        ),
        ({"apiKeys": [{"id": "bad id!", "sha256": sha("a")}]}, "apiKeys[0].id", "not valid"),
        ({"groups": ["a", "a"]}, "groups[1]", "duplicate group"),
        ({"groups": "readers"}, "groups", "must be a list"),
        ({"role": "admin"}, "role", "unknown field"),
        ({"name": "Alice"}, "name", "not valid"),
        ({"namespace": "Team_A"}, "namespace", "not valid"),
        ({"kind": "McpServer"}, "kind", "must be 'Consumer'"),
    ],
)
def test_bad_consumers_name_the_field_and_never_the_key(
    fields: dict[str, Any], path: str, reason: str
) -> None:
    found = problems(consumer_doc(**fields))
    assert any(p == path and reason in r for p, r in found), found
    assert all(KEY not in r for _, r in found)


@pytest.mark.parametrize(
    ("auth", "path", "reason"),
    [
        ({}, "auth", "no way to authenticate"),
        ({"required": False}, "auth", "no way to authenticate"),
        ({"apiKeys": {}, "required": "yes"}, "auth.required", "true or false"),
        ({"apiKeys": {"header": "x-mcpgw-key"}}, "auth.apiKeys.header", "gateway's own"),
        ({"apiKeys": {"header": "Cookie"}}, "auth.apiKeys.header", "read by the gateway"),
        ({"apiKeys": {"headr": "x"}}, "auth.apiKeys.headr", "unknown field"),
        ({"apiKeys": {}, "rules": []}, "auth.rules", "unknown field"),
        ({"jwt": "https://idp"}, "auth.jwt", "must be a list"),
        ("yes", "auth", "must be a mapping"),
    ],
)
def test_bad_auth_blocks_name_the_field(auth: Any, path: str, reason: str) -> None:
    with pytest.raises(Invalid) as error:
        parse_server(server_doc(auth=auth), "s.yaml")
    found = [(p.path, p.reason) for p in error.value.problems]
    assert any(p == path and reason in r for p, r in found), found


def test_auth_blocks_parse_with_their_defaults() -> None:
    server = parse_server(server_doc(auth={"apiKeys": None}))
    assert server.auth is not None and server.auth.required and server.auth.api_keys is not None
    assert server.auth.api_keys.header == "authorization"
    custom = parse_server(server_doc(auth={"required": False, "apiKeys": {"header": "X-Api-Key"}}))
    assert custom.auth is not None and not custom.auth.required
    assert custom.auth.api_keys is not None and custom.auth.api_keys.header == "x-api-key"
    # With JWT (registry/jwtauth.py parses `jwt` and `oauth`), API keys are optional.
    jwt = parse_server(
        server_doc(
            auth={
                "apiKeys": {},
                "jwt": [{"issuer": "https://idp.example", "jwks": {"uri": "https://idp.example/jwks"}}],
                "oauth": {"authorizationServers": ["https://idp.example"]},
            }
        )
    )
    assert jwt.auth is not None and jwt.auth.api_keys is not None
    assert [i.issuer for i in jwt.auth.jwt] == ["https://idp.example"] and jwt.auth.oauth is not None


def test_one_directory_holds_both_kinds_and_cross_document_rules_apply(tmp_path: Path) -> None:
    (tmp_path / "svc.yaml").write_text(yaml.safe_dump(server_doc(auth={"apiKeys": {}})))
    (tmp_path / "people.yaml").write_text(
        yaml.safe_dump_all([consumer_doc(), consumer_doc("ops", None, groups=["admins"])])
    )
    snapshot = load_directory(tmp_path)
    assert [c.key for c in snapshot.consumers] == ["consumers/*/ops", "consumers/default/alice"]
    (server,) = snapshot.servers
    auth = filter_config(server, snapshot, {})["auth"]
    assert auth["required"] is True and auth["apiKeyHeader"] == "authorization"
    assert auth["apiKeys"][sha("default/alice")] == {
        "consumer": "alice",
        "namespace": "default",
        "keyId": "k-1",
        "groups": [],
    }
    assert auth["apiKeys"][sha("None/ops")]["namespace"] == ""
    # A server without `auth` gets no `auth` key: exactly as before.
    plain = parse_server(server_doc(name="plain"))
    assert "auth" not in filter_config(plain, snapshot, {})

    # The same hash on two consumers; the same consumer twice.
    (tmp_path / "dup.yaml").write_text(
        yaml.safe_dump_all(
            [consumer_doc("bob", apiKeys=[{"id": "x", "sha256": sha("default/alice")}]), consumer_doc()]
        )
    )
    with pytest.raises(Invalid) as error:
        load_directory(tmp_path)
    assert any(
        p.file.endswith("dup.yaml#0")
        and p.path == "apiKeys[0].sha256"
        and "the same key hash as consumer default/alice" in p.reason
        for p in error.value.problems
    ), error.value.problems
    assert any(
        "consumer 'consumers/default/alice' is also defined in" in p.reason for p in error.value.problems
    )


async def test_a_consumer_change_is_a_new_snapshot_and_a_bad_one_keeps_the_old(tmp_path: Path) -> None:
    (tmp_path / "svc.yaml").write_text(yaml.safe_dump(server_doc(auth={"apiKeys": {}})))
    people = tmp_path / "people.yaml"
    people.write_text(yaml.safe_dump(consumer_doc()))
    store = FileStore(tmp_path)
    assert await store.load()
    first = store.snapshot
    assert first is not None
    people.write_text(yaml.safe_dump(consumer_doc(groups=["readers"])))
    assert await store.load()
    assert store.snapshot is not None and store.snapshot.revision != first.revision
    kept = store.snapshot
    people.write_text(yaml.safe_dump(consumer_doc(apiKeys=[{"id": "k", "sha256": KEY}])))
    assert not await store.load()
    assert store.snapshot is kept and store.problems[0].path == "apiKeys[0].sha256"


async def test_admin_api_creates_reads_replaces_and_deletes_consumers(api: Api) -> None:
    status, body, headers = await api.call("POST", "/v1/consumers", consumer_doc())
    assert status == 201, body
    assert headers["Location"] == "/v1/consumers/default/alice"
    assert body["apiKeys"] == ["k-1"] and body["key"] == "consumers/default/alice"
    assert (api.registry / "consumers" / "default" / "alice.yaml").is_file()
    assert (await api.call("POST", "/v1/consumers", consumer_doc()))[0] == 409
    # A global consumer lives under `_global`; its body may not name a namespace.
    status, body, _ = await api.call("PUT", "/v1/consumers/_global/ops", consumer_doc("ops", None))
    assert status == 201, body
    assert (await api.call("PUT", "/v1/consumers/_global/ops", consumer_doc("ops", "default")))[0] == 422
    status, listed, _ = await api.call("GET", "/v1/consumers")
    assert [c["key"] for c in listed["consumers"]] == ["consumers/*/ops", "consumers/default/alice"]
    status, listed, _ = await api.call("GET", "/v1/consumers?namespace=_global")
    assert [c["name"] for c in listed["consumers"]] == ["ops"]
    # Consumers are not servers.
    status, servers, _ = await api.call("GET", "/v1/servers")
    assert [s["key"] for s in servers["servers"]] == ["default/svc"]
    assert api.store.snapshot is not None and len(api.store.snapshot.consumers) == 2

    status, document, headers = await api.call("GET", "/v1/consumers/default/alice")
    etag = headers["ETag"]
    document["groups"] = ["readers"]
    status, body, _ = await api.call(
        "PUT", "/v1/consumers/default/alice", document, headers={"If-Match": etag}
    )
    assert status == 200 and body["groups"] == ["readers"]
    assert (await api.call("PUT", "/v1/consumers/default/alice", document, headers={"If-Match": etag}))[
        0
    ] == 412
    # A hash another consumer holds: 422 with where and why.
    clash = consumer_doc("bob", apiKeys=[{"id": "k", "sha256": sha("default/alice")}])
    status, body, _ = await api.call("PUT", "/v1/consumers/default/bob", clash)
    assert status == 422 and body["problems"][0]["path"] == "apiKeys[0].sha256"
    # A server document sent as a consumer is refused.
    assert (await api.call("POST", "/v1/consumers", server_doc(name="x")))[0] == 422
    assert (await api.call("DELETE", "/v1/consumers/default/alice"))[0] == 204
    assert (await api.call("GET", "/v1/consumers/default/alice"))[0] == 404
    assert not (api.registry / "consumers" / "default" / "alice.yaml").exists()


def test_cli_writes_a_consumer_file_prints_the_key_once_and_rotates_and_revokes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "registry" / "alice.yaml"
    argv = ["consumers", "create", "alice", "-n", "team-a", "--group", "readers", "--key-id", "k-1"]
    assert cli.main([*argv, "--output-file", str(path)]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("mcpgw_") and len(key) == len("mcpgw_") + 43  # 32 bytes, base64url
    assert key not in err and key not in path.read_text()
    document = yaml.safe_load(path.read_text())
    assert document["apiKeys"] == [{"id": "k-1", "sha256": sha(key)}]
    assert parse_consumer(document).groups == ("readers",)
    assert cli.main([*argv, "--output-file", str(path)]) == 1  # never overwritten
    capsys.readouterr()

    assert (
        cli.main(["consumers", "rotate", "alice", "-n", "team-a", "--key-id", "k-2", "--file", str(path)])
        == 0
    )
    second = capsys.readouterr().out.strip()
    assert second != key
    assert [k["id"] for k in yaml.safe_load(path.read_text())["apiKeys"]] == ["k-1", "k-2"]
    assert cli.main(["consumers", "rotate", "alice", "-n", "team-a", "--drop-old", "--file", str(path)]) == 0
    third = capsys.readouterr().out.strip()
    assert [k["sha256"] for k in yaml.safe_load(path.read_text())["apiKeys"]] == [sha(third)]
    # Revoking a key the consumer lacks fails; the consumer itself can be revoked.
    assert (
        cli.main(["consumers", "revoke", "alice", "-n", "team-a", "--key-id", "k-1", "--file", str(path)])
        == 1
    )
    assert cli.main(["consumers", "revoke", "alice", "-n", "team-a", "--file", str(path)]) == 0
    assert not path.exists()
    # The file's consumer must be the one named.
    assert cli.main([*argv[:3], "--output-file", str(path)]) == 0
    capsys.readouterr()
    assert cli.main(["consumers", "rotate", "bob", "--file", str(path)]) == 1


async def test_cli_against_the_admin_api(
    api: Api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = ["--admin", api.served.url]

    async def run(*argv: str) -> int:
        # In a thread: the admin API answers from this event loop.
        return await asyncio.to_thread(cli.main, ["consumers", *argv, *admin])

    monkeypatch.setenv("MCPGW_ADMIN_TOKEN", TOKEN)
    assert await run("create", "carol", "-n", "default", "--key-id", "k-1") == 0
    key = capsys.readouterr().out.strip()
    assert api.store.snapshot is not None
    (carol,) = api.store.snapshot.consumers
    assert carol.api_keys[0].sha256 == sha(key)
    assert await run("rotate", "carol", "-n", "default", "--key-id", "k-2") == 0
    capsys.readouterr()
    assert [k.id for k in api.store.snapshot.consumers[0].api_keys] == ["k-1", "k-2"]
    assert await run("revoke", "carol", "-n", "default", "--key-id", "k-1") == 0
    assert [k.id for k in api.store.snapshot.consumers[0].api_keys] == ["k-2"]
    assert await run("list", "-o", "json") == 0
    listed = capsys.readouterr().out
    assert '"k-2"' in listed and key not in listed
    assert await run("revoke", "carol", "-n", "default") == 0
    assert api.store.snapshot.consumers == ()
    assert await run("revoke", "carol", "-n", "default") == 1

    # `mcpgw apply` takes Consumer documents beside servers.
    path = api.registry.parent / "dan.yaml"
    path.write_text(yaml.safe_dump_all([consumer_doc("dan"), server_doc(name="other")]))
    applied = ["apply", "-f", str(path), *admin]
    capsys.readouterr()
    assert await asyncio.to_thread(cli.main, applied) == 0
    assert capsys.readouterr().out.splitlines() == [
        "consumer default/dan created",
        "server default/other created",
    ]
    assert await asyncio.to_thread(cli.main, applied) == 0
    assert capsys.readouterr().out.splitlines()[0] == "consumer default/dan unchanged"


async def test_consumers_in_redis_reach_the_other_replica_and_revoke_there(redis_server: RedisServer) -> None:
    one, two = RedisStore(redis_server.url), RedisStore(redis_server.url)
    try:
        await one.load()
        await two.load()
        async with following(two) as seen_two:
            await one.put(server_doc(auth={"apiKeys": {}}))
            await one.put(consumer_doc(), kind="Consumer")
            snapshot = await until(seen_two, lambda s: bool(s.consumers))
            assert snapshot.consumers[0].key == "consumers/default/alice"
            assert [s.key for s in snapshot.servers] == ["default/svc"]
            # A hash another consumer holds is refused on any replica, before Redis is written.
            with pytest.raises(Invalid):
                await two.put(
                    consumer_doc("bob", apiKeys=[{"id": "k", "sha256": sha("default/alice")}]),
                    kind="Consumer",
                )
            await one.delete("consumers/default/alice")
            await until(seen_two, lambda s: not s.consumers)
    finally:
        await one.close()
        await two.close()
