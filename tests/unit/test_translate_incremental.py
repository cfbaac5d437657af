"""The incremental translator equals a fresh translation after any sequence of registry changes.

`Translator` keeps per-server state between translations (its resources, which servers must be
re-examined every time, the shared listener); a key or entry left behind for a server that is
gone made a later, unrelated edit fail. Hypothesis drives random sequences of adds, edits and
deletes of servers — plain, with inline or environment credentials, composing other servers'
tools, `type: mcp` — plus credential value changes, whole-registry re-reads (new objects with
the same content, as a Redis resync makes) and session key rotations, and after every step
compares the incremental result with a fresh `translate` of the same snapshot, and checks that
the change hint it hands the snapshot cache gives the same versions as a full scan.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from mcpgw.registry.model import McpServer, RegistrySnapshot, Secret
from mcpgw.registry.validate import check_includes, parse_server
from mcpgw.sessions.keys import SessionKey, SessionSettings
from mcpgw.translate.envoy import Translator, translate
from mcpgw.xds.cache import SnapshotCache
from tests.unit.test_registry import minimal
from tests.unit.test_translate import SETTINGS, serialized

NAMES = ("a", "b", "c", "d", "e")
ENV = ("K1", "K2")
KINDS = ("plain", "inline", "env", "include", "mcp", "mcp-credential", "jwt")


def document(name: str, kind: str, variant: int, others: list[str]) -> dict[str, Any]:
    """A server document of `kind`; `variant` changes its content without changing its kind."""
    if kind.startswith("mcp"):
        doc: dict[str, Any] = {
            "kind": "McpServer",
            "type": "mcp",
            "name": name,
            "backend": {"endpoints": [f"127.0.0.1:{9000 + variant}", "127.0.0.1:9100"][: 1 + variant % 2]},
        }
        if kind == "mcp-credential":
            doc["securitySchemes"] = [
                {
                    "id": "key",
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Key",
                    "defaultCredential": f"k{variant}",
                }
            ]
            doc["upstreamSecurity"] = {"id": "key"}
        return doc
    doc = minimal(name=name)
    tool = doc["tools"][0]
    tool["name"] = f"get_{name}"
    tool["description"] = f"variant {variant}"
    # The largest maxRequestBytes sizes the shared listener's buffer: an edit of it alone
    # must rebuild the listener (it once kept the old limit until the set of servers changed).
    doc["limits"] = {"maxRequestBytes": (1 + variant % 3) * 2 * 1024 * 1024}
    if kind == "inline":
        doc["securitySchemes"] = [
            {"id": "basic", "type": "http", "scheme": "basic", "defaultCredential": f"user:pw{variant}"}
        ]
        tool["requestTemplate"]["security"] = {"id": "basic"}
    elif kind == "env":
        doc["securitySchemes"] = [
            {
                "id": "key",
                "type": "apiKey",
                "in": "query",
                "name": "api_key",
                "defaultCredential": {"env": ENV[variant % len(ENV)]},
            }
        ]
        tool["requestTemplate"]["security"] = {"id": "key"}
    elif kind == "jwt":
        # `auth:` is in the shared listener (jwt_authn) and routes (metadata): an edit of it
        # alone must rebuild them.
        issuer = f"https://idp{variant % 2}.example"
        doc["auth"] = {
            "jwt": [{"issuer": issuer, "jwks": {"uri": f"{issuer}/jwks", "cacheSeconds": 60 + variant}}],
            "oauth": {"authorizationServers": [issuer], "scopes": [f"s{variant % 3}"]},
        }
    elif kind == "include" and others:
        doc["include"] = [{"server": f"default/{others[variant % len(others)]}"}]
    return doc


def rotated(generation: int) -> SessionSettings:
    return SessionSettings(keys=(SessionKey(f"key{generation}", bytes([generation % 256]) * 32),))


class IncrementalTranslation(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.documents: dict[str, dict[str, Any]] = {}
        # Parsed servers: an unchanged document keeps its object, as every store does.
        self.servers: dict[str, McpServer] = {}
        self.env = {name: f"{name.lower()}-value-0" for name in ENV}
        self.settings = SETTINGS
        self.generation = 0
        self.translator = Translator(self.settings)
        self.hinted = SnapshotCache()
        self.step()

    # -- registry changes (refused like a store would refuse them) ---------------------------

    def _try(self, documents: dict[str, dict[str, Any]], reparse: set[str]) -> None:
        servers = {k: v for k, v in self.servers.items() if k in documents and k not in reparse}
        for key in documents.keys() - servers.keys():
            servers[key] = parse_server(copy.deepcopy(documents[key]), f"reg/{key}.yaml")
        if check_includes(list(servers.values())):
            return  # a dangling or clashing include: the store refuses the write
        self.documents, self.servers = documents, servers
        self.step()

    @rule(name=st.sampled_from(NAMES), kind=st.sampled_from(KINDS), variant=st.integers(0, 3))
    def put(self, name: str, kind: str, variant: int) -> None:
        """Add a server, or replace one in place (same name, any kind)."""
        others = sorted(n.split("/")[1] for n in self.documents if n != f"default/{name}")
        key = f"default/{name}"
        self._try({**self.documents, key: document(name, kind, variant, others)}, {key})

    @rule(name=st.sampled_from(NAMES))
    def delete(self, name: str) -> None:
        self._try({k: v for k, v in self.documents.items() if k != f"default/{name}"}, set())

    @rule(names=st.lists(st.sampled_from(NAMES), min_size=2, max_size=3, unique=True), data=st.data())
    def batch(self, names: list[str], data: st.DataObject) -> None:
        """Several changes in one snapshot (a file-registry poll sees them together)."""
        documents = dict(self.documents)
        reparse = set()
        for name in names:
            key = f"default/{name}"
            if key in documents and data.draw(st.booleans()):
                del documents[key]
            else:
                kind = data.draw(st.sampled_from(KINDS))
                others = sorted(n.split("/")[1] for n in documents if n != key)
                documents[key] = document(name, kind, data.draw(st.integers(0, 3)), others)
                reparse.add(key)
        self._try(documents, reparse)

    @rule()
    def reread(self) -> None:
        """Every server a new object with unchanged content (a Redis resync)."""
        self._try(dict(self.documents), set(self.documents))

    @rule(variable=st.sampled_from(ENV), value=st.integers(0, 2))
    def credential_changes(self, variable: str, value: int) -> None:
        self.env = {**self.env, variable: f"{variable.lower()}-value-{value}"}
        self.step()

    @rule()
    def session_keys_rotate(self) -> None:
        self.generation += 1
        self.settings = dataclasses.replace(self.settings, sessions=rotated(self.generation))
        self.translator.set_settings(self.settings)
        self.step()

    # -- the property ---------------------------------------------------------------------------

    def _secrets(self, snapshot: RegistrySnapshot) -> dict[Secret, str]:
        return {s: self.env[s.ref] if s.kind == "env" else s.ref for s in snapshot.secrets()}

    def step(self) -> None:
        snapshot = RegistrySnapshot(servers=tuple(self.servers[k] for k in sorted(self.servers)))
        secrets = self._secrets(snapshot)
        incremental = self.translator.translate(snapshot, secrets)
        fresh = translate(snapshot, self.settings, secrets)
        assert serialized(incremental) == serialized(fresh)
        delta = self.translator.delta
        self.hinted.set_resources(incremental, (delta.base, delta.changed) if delta else None)
        scanned = SnapshotCache()
        scanned.set_resources(fresh)
        assert self.hinted.snapshot.versions() == scanned.snapshot.versions()

    @invariant()
    def dynamic_servers_exist(self) -> None:
        # The state the original defect left behind: a server re-examined on every
        # translation although it is no longer in the registry.
        assert self.translator._dynamic <= set(self.servers)


IncrementalTranslation.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_incremental_translation_equals_a_fresh_one = IncrementalTranslation.TestCase


def test_deleting_a_server_with_a_credential_then_editing_another_in_place() -> None:
    """The exact sequence of the defect: it raised AttributeError on the deleted server."""
    translator = Translator(SETTINGS)
    docs = {n: document(n, kind, 0, ["b"]) for n, kind in (("a", "inline"), ("b", "plain"), ("c", "include"))}
    servers = {n: parse_server(d) for n, d in docs.items()}

    def run(*names: str) -> None:
        snapshot = RegistrySnapshot(servers=tuple(servers[n] for n in names))
        secrets = {s: s.ref for s in snapshot.secrets()}
        assert serialized(translator.translate(snapshot, secrets)) == serialized(
            translate(snapshot, SETTINGS, secrets)
        )

    run("a", "b", "c")
    run("b", "c")  # delete the server with a credential
    run("b")  # and the one with an include
    servers["b"] = parse_server(document("b", "plain", 1, []))
    run("b")  # an in-place edit of another server
