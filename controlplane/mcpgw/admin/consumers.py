"""`/v1/consumers`: the registry's `kind: Consumer` documents, shaped like `/v1/servers`.

- `GET /v1/consumers[?namespace=NS]`: summaries (key ids, never a key: the registry holds none)
- `POST /v1/consumers`: create (409 when it exists)
- `GET|PUT|DELETE /v1/consumers/{ns}/{name}`: one consumer; a global consumer's `{ns}` is
  `_global` (a namespace never begins with `_`). `PUT` and `DELETE` honour `If-Match`.

The handlers raise what the admin API's middleware turns into answers (`Invalid` → 422,
`NotFound` → 404, `Conflict` → 412), so consumers are refused exactly like servers.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mcpgw.admin import app as admin
from mcpgw.registry.authmodel import Consumer, consumer_key
from mcpgw.registry.consumers import KIND
from mcpgw.registry.reader import Invalid, Problem
from mcpgw.registry.store import Conflict, Entry, NotFound, RegistryStore

__all__ = ["GLOBAL_SCOPE", "add_routes", "consumer_path"]

# The `{ns}` of a global consumer's URL.
GLOBAL_SCOPE = "_global"


def consumer_path(namespace: str | None, name: str) -> str:
    return f"/v1/consumers/{namespace or GLOBAL_SCOPE}/{name}"


def summary(entry: Entry) -> dict[str, Any]:
    consumer = entry.server
    assert isinstance(consumer, Consumer)
    return {
        "key": consumer.key,
        "namespace": consumer.namespace,
        "name": consumer.name,
        "groups": list(consumer.groups),
        # Ids only: a hash is no secret, but a summary has no use for it.
        "apiKeys": [key.id for key in consumer.api_keys],
        "etag": entry.etag,
        "source": consumer.source,
    }


class ConsumerApi:
    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    @staticmethod
    def _scope(request: web.Request) -> str | None:
        scope = request.match_info["ns"]
        return None if scope == GLOBAL_SCOPE else scope

    def _key(self, request: web.Request) -> str:
        return consumer_key(self._scope(request), request.match_info["name"])

    def _current(self, key: str) -> Entry | None:
        try:
            return self.store.entry(key)
        except NotFound:
            return None

    async def list(self, request: web.Request) -> web.Response:
        namespace = request.query.get("namespace")
        entries = [
            e
            for e in self.store.consumer_entries()
            if namespace is None or (e.server.namespace or GLOBAL_SCOPE) == namespace
        ]
        return admin._respond(request, {"consumers": [summary(e) for e in entries]})

    async def get(self, request: web.Request) -> web.Response:
        entry = self.store.entry(self._key(request))
        return admin._respond(request, entry.document, etag=entry.etag)

    async def create(self, request: web.Request) -> web.Response:
        document = await admin._body(request)
        try:
            entry = await self.store.put(document, create=True, kind=KIND)
        except Conflict as error:
            return admin._error(409, f"consumer {error.key!r} already exists", etag=error.current)
        response = admin._respond(request, summary(entry), status=201, etag=entry.etag)
        response.headers["Location"] = consumer_path(entry.server.namespace, entry.server.name)
        return response

    async def put(self, request: web.Request) -> web.Response:
        scope, name = self._scope(request), request.match_info["name"]
        key = consumer_key(scope, name)
        document = _fill_identity(await admin._body(request), scope, name, admin._label(self.store, key))
        current = self._current(key)
        if_match = admin._if_match(request, current)
        create = "*" in admin._etags(request.headers.get("If-None-Match", ""))
        if create and current is not None:
            raise admin.PreconditionFailed(f"consumer {key!r} already exists", current.etag)
        entry = await self.store.put(document, if_match=if_match, create=create, kind=KIND)
        return admin._respond(
            request, summary(entry), status=201 if current is None else 200, etag=entry.etag
        )

    async def delete(self, request: web.Request) -> web.Response:
        entry = self.store.entry(self._key(request))
        await self.store.delete(entry.server.key, if_match=admin._if_match(request, entry))
        return web.Response(status=204)


def _fill_identity(document: Any, scope: str | None, name: str, label: str) -> Any:
    """`name` and `namespace` from the URL when absent; another value in the body is a 422."""
    if not isinstance(document, dict):
        return document
    document = dict(document)
    document.setdefault("kind", KIND)
    problems = []
    if document.setdefault("name", name) != name:
        problems.append(Problem(label, "name", f"must match the URL ({name!r}), got {document['name']!r}"))
    if scope is None:
        if document.get("namespace") is not None:
            problems.append(
                Problem(label, "namespace", f"a global consumer ({GLOBAL_SCOPE} in the URL) has none")
            )
    elif document.setdefault("namespace", scope) != scope:
        problems.append(
            Problem(label, "namespace", f"must match the URL ({scope!r}), got {document['namespace']!r}")
        )
    if problems:
        raise Invalid(problems)
    return document


def add_routes(app: web.Application, store: RegistryStore) -> None:
    api = ConsumerApi(store)
    one = "/v1/consumers/{ns}/{name}"
    app.router.add_get("/v1/consumers", api.list)
    app.router.add_post("/v1/consumers", api.create)
    app.router.add_get(one, api.get)
    app.router.add_put(one, api.put)
    app.router.add_delete(one, api.delete)
