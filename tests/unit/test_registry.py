"""Registry model, validation and the file source."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcpgw.registry import templates
from mcpgw.registry.filesource import FileStore, load_directory
from mcpgw.registry.model import RegistrySnapshot
from mcpgw.registry.store import Conflict, NotFound
from mcpgw.registry.validate import Invalid, Problem, parse_server
from mcpgw.translate.filterconfig import filter_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "registry"


def minimal(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "kind": "McpServer",
        "name": "svc",
        "backend": {"endpoints": ["127.0.0.1:8080"]},
        "tools": [
            {
                "name": "get",
                "args": [{"name": "id", "type": "integer", "required": True, "position": "path"}],
                "requestTemplate": {"url": "/items/{{.args.id}}", "method": "GET"},
            }
        ],
    }
    document.update(overrides)
    return document


def problems_of(document: Any) -> list[tuple[str, str]]:
    with pytest.raises(Invalid) as error:
        parse_server(document, "f.yaml")
    assert all(p.file == "f.yaml" for p in error.value.problems)
    return [(p.path, p.reason) for p in error.value.problems]


def test_example_registry_loads_with_every_field() -> None:
    snapshot = load_directory(EXAMPLES)
    (server,) = snapshot.servers
    assert (server.key, server.path) == ("default/petstore", "/mcp/default/petstore")
    assert server.backend.host_header == "petstore.internal"
    assert [t.name for t in server.tools] == ["listPets", "getPet", "createPet", "describePet"]
    list_pets, get_pet, create_pet, describe = server.tools
    # {{.config.apiVersion}} is resolved at load time and merged into one literal.
    assert list_pets.request.url == (templates.Text("/v1/pets"),)
    assert get_pet.request.url_path_nodes == 2
    assert get_pet.output_schema is not None
    assert create_pet.request.body_mode == "json_args"
    assert describe.response.body is not None and describe.error_response is not None


def test_minimal_document_gets_defaults() -> None:
    server = parse_server(minimal())
    assert server.namespace == "default"
    assert server.backend.scheme == "http" and server.backend.timeout_ms == 10_000
    assert server.tools[0].request.method == "GET"
    assert server.limits.max_json_depth == 64


def test_json_depth_limit_reaches_the_filter_configuration() -> None:
    """Python emits the default too: the filter never relies on its own."""
    server = parse_server(minimal(limits={"maxJsonDepth": 200}))
    assert server.limits.max_json_depth == 200
    snapshot = RegistrySnapshot((server,))
    assert filter_config(server, snapshot, {})["limits"]["max_json_depth"] == 200
    default = parse_server(minimal())
    assert filter_config(default, RegistrySnapshot((default,)), {})["limits"]["max_json_depth"] == 64


@pytest.mark.parametrize(
    ("change", "path", "reason"),
    [
        (lambda d: d.update(kind="Server"), "kind", "must be 'McpServer'"),
        (lambda d: d.pop("name"), "name", "is required"),
        (lambda d: d.update(name="Bad_Name"), "name", "is not valid"),
        (lambda d: d.update(colour="blue"), "colour", "unknown field"),
        (lambda d: d.update(backend={"endpoints": ["nohost"]}), "backend.endpoints[0]", "is not 'host:port'"),
        (lambda d: d.update(backend={"endpoints": []}), "backend.endpoints", "non-empty list"),
        (
            lambda d: d.update(backend={"endpoints": ["127.0.0.1:1"], "scheme": "ftp"}),
            "backend.scheme",
            "'http' or 'https'",
        ),
        (lambda d: d["tools"][0]["args"][0].update(type="uuid"), "tools[0].args[0].type", "must be one of"),
        (
            lambda d: d["tools"][0]["args"][0].update(position="matrix"),
            "tools[0].args[0].position",
            "must be one of query, path, header, cookie, body",
        ),
        (
            lambda d: d["tools"][0]["requestTemplate"].update(url="/x/{{.args.nope}}"),
            "tools[0].requestTemplate.url",
            "undeclared argument '.args.nope'",
        ),
        (
            lambda d: d["tools"][0]["requestTemplate"].update(url="/x/{{.args.id | sha256sum}}"),
            "tools[0].requestTemplate.url",
            "function 'sha256sum' is not supported",
        ),
        (
            lambda d: d["tools"][0]["requestTemplate"].update(url="/x/{{with .args.id}}{{.}}{{end}}"),
            "tools[0].requestTemplate.url",
            "action 'with' is not supported",
        ),
        (
            lambda d: d["tools"][0]["requestTemplate"].update(argsToJsonBody=True, argsToUrlParam=True),
            "tools[0].requestTemplate",
            "are exclusive",
        ),
        (
            lambda d: d["tools"][0]["requestTemplate"].update(url="items"),
            "tools[0].requestTemplate.url",
            "starting with '/'",
        ),
        (
            lambda d: d["tools"][0]["requestTemplate"].update(method="BREW"),
            "tools[0].requestTemplate.method",
            "must be one of",
        ),
        (
            lambda d: d["tools"][0]["requestTemplate"].update(url="/items"),
            "tools[0].args[0].position",
            "url path never uses",
        ),
        (
            lambda d: d["tools"][0]["requestTemplate"].update(headers=[{"key": "x", "value": "a\r\nb"}]),
            "tools[0].requestTemplate.headers[0].value",
            "contains a control character",
        ),
        (
            lambda d: d["tools"][0]["requestTemplate"].update(url="/{{.config.missing}}/{{.args.id}}"),
            "tools[0].requestTemplate.url",
            "config has no 'missing'",
        ),
        (lambda d: d["tools"].append(copy.deepcopy(d["tools"][0])), "tools[1].name", "duplicate tool name"),
        (
            lambda d: d["tools"][0].update(outputSchema={"type": "array"}),
            "tools[0].outputSchema",
            "type 'object'",
        ),
        (
            lambda d: d["tools"][0].update(responseTemplate={"body": "x", "appendBody": "y"}),
            "tools[0].responseTemplate",
            "exclusive",
        ),
        (lambda d: d["tools"][0].update(securitySchemes=[]), "tools[0].securitySchemes", "unknown field"),
        (
            lambda d: d["tools"][0]["requestTemplate"].update(security={"id": "nope"}),
            "tools[0].requestTemplate.security.id",
            "no security scheme 'nope'",
        ),
        (
            lambda d: d.update(securitySchemes=[{"id": "k", "type": "apiKey", "in": "cookie", "name": "k"}]),
            "securitySchemes[0].in",
            "must be one of header, query",
        ),
        (
            lambda d: (
                d.update(securitySchemes=[{"id": "b", "type": "http", "scheme": "bearer"}]),
                d["tools"][0]["requestTemplate"].update(security={"id": "b"}),
            ),
            "tools[0].requestTemplate.security",
            "no credential",
        ),
        (
            lambda d: (
                d.update(securitySchemes=[{"id": "b", "type": "http", "scheme": "bearer"}]),
                d["tools"][0].update(security={"id": "b"}),
            ),
            "tools[0].security.passthrough",
            "does not authenticate clients",
        ),
        (
            lambda d: (
                d.update(
                    securitySchemes=[
                        {"id": "b", "type": "http", "scheme": "basic"},
                        {"id": "k", "type": "apiKey", "in": "header", "name": "x-key"},
                    ]
                ),
                d["tools"][0].update(security={"id": "b", "passthrough": True}),
                d["tools"][0]["requestTemplate"].update(security={"id": "k"}),
            ),
            "tools[0].security",
            "basic credential can only be passed through to a basic scheme",
        ),
        (
            lambda d: d.update(
                securitySchemes=[{"id": "b", "type": "http", "scheme": "bearer", "defaultCredential": 7}]
            ),
            "securitySchemes[0].defaultCredential",
            "must be a credential string",
        ),
        (
            lambda d: d["tools"][0]["requestTemplate"].update(url="//evil.example/{{.args.id}}"),
            "tools[0].requestTemplate.url",
            "must not start with '//'",
        ),
        (
            lambda d: (
                d["tools"][0]["responseTemplate"]
                if False
                else d["tools"][0].update(responseTemplate={"body": "{{if .ok}}yes"})
            ),
            "tools[0].responseTemplate.body",
            "missing '{{end}}'",
        ),
        (
            lambda d: d["tools"][0]["args"][0].update(enum=[1, "two"]),
            "tools[0].args[0].enum",
            "every value must be of type integer",
        ),
        (lambda d: d.update(include=[{"server": "nope"}]), "include[0].server", "is not valid"),
        (
            lambda d: d["tools"][0]["args"][0].update(default="seven"),
            "tools[0].args[0].default",
            "must be of type integer",
        ),
        (lambda d: d.update(allowTools=["missing"]), "allowTools[0]", "no tool named 'missing'"),
        (lambda d: d.update(limits={"maxJsonDepth": 0}), "limits.maxJsonDepth", "from 1 to 1000, got 0"),
        (
            lambda d: d.update(limits={"maxResponseBytes": (8 << 20) + 1}),
            "limits.maxResponseBytes",
            "from 1 to 8388608",
        ),
        (lambda d: d.update(limits={"maxJsonDepth": 1001}), "limits.maxJsonDepth", "from 1 to 1000"),
        (lambda d: d.update(limits={"maxJsonDepth": "64"}), "limits.maxJsonDepth", "from 1 to 1000"),
    ],
)
def test_validation_names_field_path_and_reason(change: Any, path: str, reason: str) -> None:
    document = minimal()
    change(document)
    found = problems_of(document)
    assert any(p == path and reason in r for p, r in found), found


def test_every_problem_is_reported_at_once() -> None:
    document = minimal(name="BAD", colour="x")
    document["tools"][0]["requestTemplate"]["method"] = "BREW"
    paths = {path for path, _ in problems_of(document)}
    assert {"name", "colour", "tools[0].requestTemplate.method"} <= paths


def test_absolute_url_keeps_only_path_and_query() -> None:
    document = minimal()
    document["tools"][0]["requestTemplate"]["url"] = "https://api.example.com/items/{{.args.id}}?v=1"
    request = parse_server(document).tools[0].request
    assert request.url == (
        templates.Text("/items/"),
        templates.Output(templates.Field(("args", "id"))),
        templates.Text("?v=1"),
    )
    assert request.url_path_nodes == 2


def test_allow_tools_keeps_only_listed_tools() -> None:
    document = minimal()
    second = copy.deepcopy(document["tools"][0])
    second["name"] = "other"
    document["tools"].append(second)
    document["allowTools"] = ["other"]
    assert [t.name for t in parse_server(document).tools] == ["other"]


def write(directory: Path, name: str, document: Any) -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(document) if not isinstance(document, str) else document)
    return path


def test_directory_problems_name_the_file(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", minimal())
    write(tmp_path, "broken.yaml", "kind: McpServer\nname: [unclosed\n")
    write(tmp_path, "dup.yml", minimal())
    with pytest.raises(Invalid) as error:
        load_directory(tmp_path)
    messages = [str(p) for p in error.value.problems]
    assert any("broken.yaml" in m and "cannot read YAML" in m for m in messages), messages
    assert any("dup.yml" in m and "also defined in" in m for m in messages) or any(
        "good.yaml" in m and "also defined in" in m for m in messages
    ), messages


def test_multi_document_files_and_hidden_files(tmp_path: Path) -> None:
    other = minimal(name="other")
    (tmp_path / "both.yaml").write_text(yaml.safe_dump_all([minimal(), other]))
    write(tmp_path, ".editor-swap.yaml", "not: [valid")
    snapshot = load_directory(tmp_path)
    assert [s.key for s in snapshot.servers] == ["default/other", "default/svc"]


async def test_file_store_keeps_last_valid_snapshot_and_recovers(tmp_path: Path) -> None:
    path = write(tmp_path, "svc.yaml", minimal())
    store = FileStore(tmp_path)
    assert await store.load()
    good = store.snapshot
    broken = minimal()
    broken["tools"][0]["requestTemplate"]["method"] = "BREW"
    write(tmp_path, "svc.yaml", broken)
    assert not await store.load()
    assert store.snapshot is good
    assert (store.problems[0].file, store.problems[0].path) == (str(path), "tools[0].requestTemplate.method")
    write(tmp_path, "svc.yaml", minimal(description="fixed"))
    assert await store.load()
    assert store.problems == [] and store.snapshot is not None
    assert store.snapshot.servers[0].description == "fixed"


async def test_file_store_watch_emits_new_snapshots(tmp_path: Path) -> None:
    write(tmp_path, "svc.yaml", minimal())
    store = FileStore(tmp_path, poll_interval=0.05)
    await store.load()
    seen: asyncio.Queue[RegistrySnapshot] = asyncio.Queue()

    async def on_snapshot(snapshot: RegistrySnapshot) -> None:
        await seen.put(snapshot)

    task = asyncio.create_task(store.watch(on_snapshot))
    try:
        write(tmp_path, "svc.yaml", minimal(description="edited"))
        snapshot = await asyncio.wait_for(seen.get(), 3)
        assert snapshot.servers[0].description == "edited"
        write(tmp_path, "svc.yaml", "kind: [")  # invalid: no snapshot emitted
        await asyncio.sleep(0.3)
        assert seen.empty() and store.problems
    finally:
        task.cancel()


async def test_file_store_writes_are_validated_atomic_and_emitted_once(tmp_path: Path) -> None:
    other = minimal(name="other")
    (tmp_path / "both.yaml").write_text(yaml.safe_dump_all([minimal(), other]))
    store = FileStore(tmp_path, poll_interval=0.05)
    await store.load()
    seen: list[RegistrySnapshot] = []

    async def on_snapshot(snapshot: RegistrySnapshot) -> None:
        seen.append(snapshot)

    task = asyncio.create_task(store.watch(on_snapshot))
    await asyncio.sleep(0)  # let the watcher start and register its handler
    try:
        created = await store.put(minimal(name="fresh", namespace="team"), create=True)
        assert (tmp_path / "team" / "fresh.yaml").is_file() and created.server.source == str(
            tmp_path / "team" / "fresh.yaml"
        )
        with pytest.raises(Conflict):
            await store.put(minimal(name="fresh", namespace="team"), create=True)
        edited = minimal(name="other", description="edited in place")
        etag = store.entry("default/other").etag
        await store.put(edited, if_match=etag)
        # The other document of the multi-document file is kept, in order.
        documents = list(yaml.safe_load_all((tmp_path / "both.yaml").read_text()))
        assert [d["name"] for d in documents] == ["svc", "other"] and documents[1][
            "description"
        ] == "edited in place"
        with pytest.raises(Conflict) as conflict:
            await store.put(minimal(name="other"), if_match=etag)
        assert conflict.value.current == store.entry("default/other").etag
        broken = minimal(name="other")
        broken["tools"][0]["requestTemplate"]["method"] = "BREW"
        before = (tmp_path / "both.yaml").read_text()
        with pytest.raises(Invalid):
            await store.put(broken)
        assert (tmp_path / "both.yaml").read_text() == before
        composed = minimal(name="composed", include=[{"server": "team/fresh"}])
        composed["tools"][0]["name"] = "own"
        await store.put(composed)
        with pytest.raises(Invalid, match="no such server"):
            await store.delete("team/fresh")
        await store.delete("default/composed")
        await store.delete("team/fresh")
        assert not (tmp_path / "team" / "fresh.yaml").exists()
        with pytest.raises(NotFound):
            store.entry("team/fresh")
        await asyncio.sleep(0.3)
        # One snapshot per write, none repeated by the watcher seeing our own files.
        assert len(seen) == 5 and not list(tmp_path.rglob(".*.tmp"))
    finally:
        task.cancel()


async def test_precheck_refuses_a_write_before_it_is_persisted(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.load()
    calls: list[str] = []

    async def precheck(snapshot: RegistrySnapshot, changed: str) -> None:
        calls.append(changed)
        if snapshot.server(changed) is not None and snapshot.server(changed).description == "unservable":  # type: ignore[union-attr]
            raise Invalid([Problem("x", "", "credential file missing")])

    store.precheck = precheck
    await store.put(minimal())
    with pytest.raises(Invalid, match="credential file missing"):
        await store.put(minimal(description="unservable"))
    assert store.entry("default/svc").server.description == ""
    assert "unservable" not in (tmp_path / "default" / "svc.yaml").read_text()
    assert calls == ["default/svc", "default/svc"]


async def test_deleting_from_a_multi_document_file_keeps_later_documents_writable(tmp_path: Path) -> None:
    (tmp_path / "all.yaml").write_text(
        yaml.safe_dump_all([minimal(name="a"), minimal(name="b"), minimal(name="c")])
    )
    store = FileStore(tmp_path)
    await store.load()
    await store.delete("default/a")
    assert store.entry("default/c").server.source == f"{tmp_path / 'all.yaml'}#1"
    await store.put(minimal(name="c", description="still here"), if_match=store.entry("default/c").etag)
    documents = list(yaml.safe_load_all((tmp_path / "all.yaml").read_text()))
    assert [(d["name"], d.get("description")) for d in documents] == [("b", None), ("c", "still here")]
    reloaded = FileStore(tmp_path)
    await reloaded.load()
    assert reloaded.snapshot is not None and reloaded.snapshot.revision == store.snapshot.revision  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("field", "value", "path", "reason"),
    [
        ("allowedOrigins", "https://a.example", "allowedOrigins", "must be a list of origins"),
        ("allowedOrigins", ["https://a.example/app"], "allowedOrigins[0]", "is not an http(s) origin"),
        ("allowedOrigins", ["ftp://a.example"], "allowedOrigins[0]", "is not an http(s) origin"),
        ("allowedOrigins", ["a.example"], "allowedOrigins[0]", "is not an http(s) origin"),
        ("allowedOrigins", ["https://a.example:99999"], "allowedOrigins[0]", "is not an http(s) origin"),
        ("allowedOrigins", [7], "allowedOrigins[0]", "is not an http(s) origin"),
        (
            "allowedOrigins",
            ["https://a.example", "https://A.example:443"],
            "allowedOrigins[1]",
            "duplicate origin",
        ),
        ("pageSize", 0, "pageSize", "must be an integer from 1 to 1000"),
        ("pageSize", 1001, "pageSize", "must be an integer from 1 to 1000"),
        ("pageSize", True, "pageSize", "must be an integer from 1 to 1000"),
        ("pageSize", "2", "pageSize", "must be an integer from 1 to 1000"),
    ],
)
def test_streamable_http_fields_are_validated(field: str, value: Any, path: str, reason: str) -> None:
    found = problems_of(minimal(**{field: value}))
    assert any(p == path and reason in r for p, r in found), found


def test_streamable_http_fields_are_normalised_and_optional() -> None:
    server = parse_server(minimal())
    assert (server.allowed_origins, server.page_size) == ((), 0)
    server = parse_server(
        minimal(
            allowedOrigins=["https://App.Example.com:443", "http://10.0.0.1:8080", "http://[::1]:3000"],
            pageSize=2,
        )
    )
    assert server.allowed_origins == ("https://app.example.com", "http://10.0.0.1:8080", "http://[::1]:3000")
    assert server.page_size == 2
