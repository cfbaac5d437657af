"""Which server a NACK refuses, and what is delivered instead (`mcpgw.refusals`)."""

from __future__ import annotations

from typing import Any

from mcpgw.refusals import Refusals
from mcpgw.registry.model import RegistrySnapshot
from mcpgw.translate.envoy import LISTENER_NAME, Translator
from mcpgw.xds import types
from mcpgw.xds.cache import Snapshot, content_hash
from mcpgw.xds.stream import Nack
from tests.unit.test_registry import minimal
from tests.unit.test_translate import SETTINGS, snapshot_of


def described(name: str, description: str) -> dict[str, Any]:
    document = minimal(name=name)
    document["tools"][0]["description"] = description
    return document


def nack(type_url: str, error: str, resources: dict[str, str]) -> Nack:
    return Nack(type_url, "v2", "v1", "7", error, 0.0, resources)


def translated(*documents: dict[str, Any]) -> tuple[RegistrySnapshot, Any, Snapshot]:
    registry = snapshot_of(*documents)
    resources = Translator(SETTINGS).translate(registry)
    return registry, resources, Snapshot.build(resources)


def hash_of(resources: Any, type_url: str, name: str) -> str:
    return content_hash(resources[type_url][name])


def test_the_server_named_in_envoys_error_is_refused_not_its_neighbours() -> None:
    registry, resources, current = translated(minimal(name="bad"), minimal(name="bad2"), minimal(name="ok"))
    refusals = Refusals()
    sent = {n: hash_of(resources, types.EXTENSION_CONFIG, n) for n in resources[types.EXTENSION_CONFIG]}
    error = "Unable to create Wasm plugin mcpgw/default/bad"
    assert refusals.nacked("node-1", nack(types.EXTENSION_CONFIG, error, sent), current)
    assert [(r["server"], r["type"], r["node"]) for r in refusals.status()] == [
        ("default/bad", "ecds", "node-1")
    ]
    # The same refusal again (another node, a repeated NACK) is not news.
    assert not refusals.nacked("node-2", nack(types.EXTENSION_CONFIG, error, sent), current)

    isolated = refusals.isolate(registry, resources, SETTINGS)
    assert "mcpgw/default/bad" not in isolated[types.EXTENSION_CONFIG]
    assert "mcpgw/default/bad2" in isolated[types.EXTENSION_CONFIG]
    listener = str(isolated[types.LISTENER][LISTENER_NAME])
    assert "/mcp/default/bad2" in listener and '"/mcp/default/bad"' not in listener
    assert refusals.status()[0]["serving"].startswith("nothing")


def test_an_unnamed_refusal_of_a_one_resource_response_is_that_resource() -> None:
    _, resources, current = translated(minimal(name="one"), minimal(name="two"))
    refusals = Refusals()
    one = {"mcpgw/default/one": hash_of(resources, types.EXTENSION_CONFIG, "mcpgw/default/one")}
    assert refusals.nacked("n", nack(types.EXTENSION_CONFIG, "invalid", one), current)
    # Several resources and no name in the error: nobody is blamed.
    both = {n: hash_of(resources, types.EXTENSION_CONFIG, n) for n in resources[types.EXTENSION_CONFIG]}
    assert not Refusals().nacked("n", nack(types.EXTENSION_CONFIG, "invalid", both), current)


def test_a_listener_nack_names_the_ecds_config_it_carried() -> None:
    _, _, current = translated(minimal(name="bad"), minimal(name="ok"))
    refusals = Refusals()
    error = "Error adding/updating listener(s) mcpgw-http: Unable to create Wasm plugin mcpgw/default/bad\n"
    assert refusals.nacked("n", nack(types.LISTENER, error, {LISTENER_NAME: "h"}), current)
    [refusal] = refusals.status()
    assert (refusal["server"], refusal["resource"], refusal["type"]) == (
        "default/bad",
        "mcpgw/default/bad",
        "lds",
    )


def test_a_refused_edit_serves_the_last_accepted_version_until_the_document_changes() -> None:
    registry, first, current = translated(minimal(name="svc"))
    refusals = Refusals()
    name = "mcpgw/default/svc"
    refusals.accepted(types.EXTENSION_CONFIG, {name: hash_of(first, types.EXTENSION_CONFIG, name)}, current)

    registry, second, current = translated(described("svc", "edited"))
    refused = hash_of(second, types.EXTENSION_CONFIG, name)
    assert refusals.nacked(
        "n", nack(types.EXTENSION_CONFIG, f"Unable to create Wasm plugin {name}", {name: refused}), current
    )
    isolated = refusals.isolate(registry, second, SETTINGS)
    assert isolated[types.EXTENSION_CONFIG][name] is first[types.EXTENSION_CONFIG][name]
    assert isolated[types.LISTENER] is second[types.LISTENER]  # the server stays in the listener
    assert refusals.status()[0]["serving"] == "the last configuration Envoy accepted"

    # Edited again: the new content gets its chance, and nothing is isolated any more.
    registry, third, _ = translated(described("svc", "fixed"))
    assert refusals.isolate(registry, third, SETTINGS) is third
    assert refusals.status() == []


def test_a_refused_cluster_is_left_out_and_named_with_its_server() -> None:
    mcp = {
        "kind": "McpServer",
        "type": "mcp",
        "name": "up",
        "backend": {"endpoints": ["127.0.0.1:1", "127.0.0.1:2"]},
    }
    registry, resources, current = translated(mcp, minimal(name="ok"))
    refusals = Refusals()
    sent = {n: hash_of(resources, types.CLUSTER, n) for n in resources[types.CLUSTER]}
    error = "Error adding/updating cluster(s) mcpgw/default/up|h1: cluster manager: invalid"
    assert refusals.nacked("n", nack(types.CLUSTER, error, sent), current)
    [refusal] = refusals.status()
    assert (refusal["server"], refusal["resource"], refusal["type"]) == (
        "default/up",
        "mcpgw/default/up|h1",
        "cds",
    )
    isolated = refusals.isolate(registry, resources, SETTINGS)
    assert set(isolated[types.CLUSTER]) == set(resources[types.CLUSTER]) - {"mcpgw/default/up|h1"}
    assert isolated[types.LISTENER] is resources[types.LISTENER]
