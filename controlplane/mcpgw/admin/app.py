"""The admin API: create, read, update and delete MCP servers, single tools and namespaces.

Every write goes through `RegistryStore.put/delete`, so the API enforces exactly the rules a
file edit must pass (whole-registry validation, the control plane's precheck of credentials
and generated Envoy configuration, atomic persistence) and a change reaches Envoy
the same way a file edit does. Concurrency is optimistic: reads return the server document's
etag, writes may send `If-Match`, and a stale one gets 412 with the current etag instead of
overwriting someone's edit. A tool is not stored on its own: editing one rewrites its server
document under that document's etag.

Session keys (`/v1/session-keys`) are listed by id and dates only; their secrets never leave
the control plane except toward Envoy. A rotation goes to the key store every replica shares.

Namespaces exist only through their servers (a namespace is the `namespace` field of at least
one server): there is nothing to store for an empty namespace, so `PUT` of one without servers
is refused rather than pretending to record it.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import yaml
from aiohttp import web

from mcpgw import nesting
from mcpgw.admin.auth import FULL_ACCESS, Authorizer
from mcpgw.admin.scopes import foreign_includes
from mcpgw.log import get_logger
from mcpgw.registry import yamldocs
from mcpgw.registry.reader import Invalid, Problem
from mcpgw.registry.store import ApplyFailed, Conflict, Entry, NotFound, RegistryStore, StoreUnavailable
from mcpgw.sessions.keys import DEFAULT_GRACE_S, MAX_GRACE_S
from mcpgw.sessions.manager import RotationConflict, RotationRefused, SessionKeys
from mcpgw.sessions.store import KeyStoreUnavailable

log = get_logger(__name__)
StatusProvider = Callable[[], dict[str, Any]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_MAX_BODY = 16 << 20
# The namespace a request's token is limited to (None: the admin token or open reads).
_SCOPE = web.RequestKey("namespace_scope", str | None)
# A tool edit without If-Match is read-modify-write under the server's etag; another writer
# slipping in between is retried this many times before giving up with 412.
_TOOL_WRITE_ATTEMPTS = 3


class BadRequest(Exception):
    """The body could not be read as one JSON or YAML document (400)."""


class PreconditionFailed(Exception):
    def __init__(self, message: str, current: str | None) -> None:
        super().__init__(message)
        self.current = current


class Gone(LookupError):
    """Something inside an existing server (a tool, a namespace) does not exist (404)."""


# -- helpers ---------------------------------------------------------------------------------


def _quote(etag: str) -> str:
    return f'"{etag}"'


def _etags(header: str) -> list[str]:
    """The entity tags of an If-Match / If-None-Match header, weak prefixes and quotes removed."""
    tags = []
    for part in header.split(","):
        tag = part.strip()
        tag = tag.removeprefix("W/")
        if len(tag) >= 2 and tag[0] == tag[-1] == '"':
            tag = tag[1:-1]
        if tag:
            tags.append(tag)
    return tags


def _if_match(request: web.Request, current: Entry | None) -> str | None:
    """The etag to hand the store as `if_match`, or raise PreconditionFailed right away."""
    header = request.headers.get("If-Match")
    if header is None:
        return None
    tags = _etags(header)
    etag = current.etag if current else None
    if etag is not None and ("*" in tags or etag in tags):
        return etag
    raise PreconditionFailed("If-Match does not match the current document", etag)


def _wants_yaml(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "yaml" in accept and "json" not in accept


def _respond(request: web.Request, data: Any, *, status: int = 200, etag: str | None = None) -> web.Response:
    headers = {"ETag": _quote(etag)} if etag else {}
    if _wants_yaml(request):
        text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
        return web.Response(text=text, status=status, content_type="application/yaml", headers=headers)
    return web.Response(
        text=json.dumps(data, indent=2, default=str) + "\n",
        status=status,
        content_type="application/json",
        headers=headers,
    )


class OutOfScope(Exception):
    """A namespace token's write reaches outside its namespace (403)."""


def _in_scope(request: web.Request, namespace: str) -> bool:
    """What a namespace token may reach: paths under its namespace (servers, consumers), creating
    a server (the body's namespace is checked by the handler), and the server and consumer lists
    filtered to its namespace."""
    if "ns" in request.match_info:
        return request.match_info["ns"] == namespace
    if request.path == "/v1/servers":
        return request.method == "POST" or request.query.get("namespace") == namespace
    if request.path == "/v1/consumers":
        # Its consumers are listed filtered; they are written at /v1/consumers/{ns}/{name}.
        return request.method == "GET" and request.query.get("namespace") == namespace
    return False


def _check_scope(request: web.Request, document: Any) -> None:
    """A scoped write stays in its namespace, includes too (an include serves the other
    namespace's tool, with its backend credentials, from this namespace's endpoint)."""
    namespace = request.get(_SCOPE)
    if namespace is None:
        return
    if isinstance(document, dict) and document.get("namespace", namespace) != namespace:
        raise OutOfScope(
            f"this token may only use namespace {namespace!r}, not {document.get('namespace')!r}"
        )
    foreign = foreign_includes(document, namespace)
    if foreign:
        raise OutOfScope(
            f"this token may only use namespace {namespace!r}: "
            f"it cannot include tools of {', '.join(foreign)}"
        )


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _problems(problems: list[Problem]) -> list[dict[str, str]]:
    return [{"file": p.file, "path": p.path, "reason": p.reason} for p in problems]


async def _body(request: web.Request) -> Any:
    """One document from a JSON (default) or YAML (`application/yaml`) body."""
    raw = await request.read()
    if not raw.strip():
        raise BadRequest("empty body: expected one JSON or YAML document")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequest("body is not UTF-8") from error
    if "yaml" in request.content_type:
        try:
            documents = yamldocs.load_all(text)
        except yaml.YAMLError as error:
            raise BadRequest(f"malformed YAML: {' '.join(str(error).split())}") from error
        if len(documents) != 1:
            raise BadRequest(f"expected exactly one YAML document, got {len(documents)}")
        return documents[0]
    try:
        return nesting.loads(text)
    except nesting.TooDeep as error:
        raise BadRequest(f"JSON {error}") from None
    except json.JSONDecodeError as error:
        raise BadRequest(f"malformed JSON: {error}") from error


def _summary(entry: Entry) -> dict[str, Any]:
    server = entry.server
    return {
        "key": server.key,
        "namespace": server.namespace,
        "name": server.name,
        "path": server.path,
        "etag": entry.etag,
        "description": server.description,
        "tools": [tool.name for tool in server.tools],
        "source": server.source,
        # Accepted but worth a look (`field.path: reason`), e.g. TLS verification turned off.
        "warnings": list(server.warnings),
    }


def _label(store: RegistryStore, key: str) -> str:
    """The `file` of a problem in a written document, as the store itself names it."""
    return f"{store.description}: {key}"


def _fill_identity(document: Any, fields: dict[str, str], label: str) -> Any:
    """Fill `name`/`namespace` from the URL when absent; a different value in the body is a 422.

    The URL names the resource: a body that names another one is almost always a copy-paste
    mistake, and writing it would silently create a second server.
    """
    if not isinstance(document, dict):
        return document
    document = dict(document)
    problems = []
    for field, expected in fields.items():
        given = document.setdefault(field, expected)
        if given != expected:
            problems.append(Problem(label, field, f"must match the URL ({expected!r}), got {given!r}"))
    if problems:
        raise Invalid(problems)
    return document


def _tools_of(entry: Entry) -> list[Any]:
    tools = entry.document.get("tools")
    return list(tools) if isinstance(tools, list) else []


def _grace_seconds(document: Any) -> int:
    """`grace_seconds` of a rotation request (absent: the default); raises `Invalid` with field paths."""
    label = "session-keys rotation request"
    if not isinstance(document, dict):
        raise Invalid([Problem(label, "", 'expected a mapping such as {"grace_seconds": 3600}')])
    problems = [Problem(label, str(field), "unknown field") for field in document if field != "grace_seconds"]
    grace = document.get("grace_seconds", DEFAULT_GRACE_S)
    if isinstance(grace, bool) or not isinstance(grace, int):
        problems.append(Problem(label, "grace_seconds", "must be a whole number of seconds"))
    elif not 0 <= grace <= MAX_GRACE_S:
        problems.append(Problem(label, "grace_seconds", f"must be between 0 and {MAX_GRACE_S}, got {grace}"))
    if problems:
        raise Invalid(problems)
    return int(grace)


def _tool_index(tools: list[Any], name: str) -> int | None:
    return next(
        (i for i, tool in enumerate(tools) if isinstance(tool, dict) and tool.get("name") == name), None
    )


# -- the application -------------------------------------------------------------------------


class AdminApi:
    def __init__(
        self,
        store: RegistryStore,
        status: StatusProvider,
        authorizer: Authorizer,
        sessions: SessionKeys | None = None,
    ) -> None:
        self.store = store
        self.status_provider = status
        self.authorizer = authorizer
        self.sessions = sessions

    def _entry(self, request: web.Request) -> Entry:
        return self.store.entry(f"{request.match_info['ns']}/{request.match_info['name']}")

    def _current(self, key: str) -> Entry | None:
        try:
            return self.store.entry(key)
        except NotFound:
            return None

    # -- status ----------------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        return _respond(request, self.status_provider())

    async def healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    # -- servers ---------------------------------------------------------------------------

    async def list_servers(self, request: web.Request) -> web.Response:
        namespace = request.query.get("namespace")
        entries = [e for e in self.store.entries() if namespace is None or e.server.namespace == namespace]
        return _respond(request, {"servers": [_summary(e) for e in entries]})

    async def get_server(self, request: web.Request) -> web.Response:
        entry = self._entry(request)
        return _respond(request, entry.document, etag=entry.etag)

    async def create_server(self, request: web.Request) -> web.Response:
        document = await _body(request)
        _check_scope(request, document)
        try:
            entry = await self.store.put(document, create=True)
        except Conflict as error:
            return _error(409, f"MCP server {error.key!r} already exists", etag=error.current)
        location = f"/v1/servers/{entry.server.namespace}/{entry.server.name}"
        response = _respond(request, _summary(entry), status=201, etag=entry.etag)
        response.headers["Location"] = location
        return response

    async def put_server(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["ns"], request.match_info["name"]
        key = f"{namespace}/{name}"
        document = _fill_identity(
            await _body(request), {"namespace": namespace, "name": name}, _label(self.store, key)
        )
        _check_scope(request, document)
        current = self._current(key)
        if_match = _if_match(request, current)
        # If-None-Match: * is "create, never replace" for clients that prefer PUT to POST.
        create = "*" in _etags(request.headers.get("If-None-Match", ""))
        if create and current is not None:
            raise PreconditionFailed(f"MCP server {key!r} already exists", current.etag)
        entry = await self.store.put(document, if_match=if_match, create=create)
        return _respond(request, _summary(entry), status=201 if current is None else 200, etag=entry.etag)

    async def delete_server(self, request: web.Request) -> web.Response:
        entry = self._entry(request)
        await self.store.delete(entry.server.key, if_match=_if_match(request, entry))
        return web.Response(status=204)

    # -- tools -----------------------------------------------------------------------------

    async def list_tools(self, request: web.Request) -> web.Response:
        entry = self._entry(request)
        return _respond(request, {"server": entry.server.key, "tools": _tools_of(entry)}, etag=entry.etag)

    def _tool(self, entry: Entry, name: str) -> Any:
        tools = _tools_of(entry)
        index = _tool_index(tools, name)
        if index is None:
            raise Gone(f"no tool {name!r} in MCP server {entry.server.key!r}")
        return tools[index]

    async def get_tool(self, request: web.Request) -> web.Response:
        entry = self._entry(request)
        return _respond(request, self._tool(entry, request.match_info["tool"]), etag=entry.etag)

    async def _edit_tools(
        self, request: web.Request, edit: Callable[[Entry, list[Any]], list[Any]]
    ) -> tuple[Entry, Entry]:
        """Rewrite the server's `tools` with `edit` under its etag; returns (before, after)."""
        for attempt in range(_TOOL_WRITE_ATTEMPTS):
            entry = self._entry(request)
            requested = _if_match(request, entry)
            document = copy.deepcopy(entry.document)
            document["tools"] = edit(entry, _tools_of(entry))
            try:
                return entry, await self.store.put(document, if_match=requested or entry.etag)
            except Conflict:
                # The client's own precondition failing is its business; our internal one
                # failing only means another write landed first: read again and redo the edit.
                if requested is not None or attempt == _TOOL_WRITE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def put_tool(self, request: web.Request) -> web.Response:
        name = request.match_info["tool"]
        label = _label(self.store, f"{request.match_info['ns']}/{request.match_info['name']}")
        tool = await _body(request)
        if not isinstance(tool, dict):
            raise Invalid([Problem(label, "", "a tool must be a mapping")])
        tool = _fill_identity(tool, {"name": name}, label)
        created = False

        def edit(_: Entry, tools: list[Any]) -> list[Any]:
            nonlocal created
            index = _tool_index(tools, name)
            created = index is None
            if index is None:
                return [*tools, tool]
            return [*tools[:index], tool, *tools[index + 1 :]]

        _, after = await self._edit_tools(request, edit)
        return _respond(request, tool, status=201 if created else 200, etag=after.etag)

    async def delete_tool(self, request: web.Request) -> web.Response:
        name = request.match_info["tool"]

        def edit(entry: Entry, tools: list[Any]) -> list[Any]:
            self._tool(entry, name)  # 404 for an unknown tool
            return [t for t in tools if not (isinstance(t, dict) and t.get("name") == name)]

        _, after = await self._edit_tools(request, edit)
        return web.Response(status=204, headers={"ETag": _quote(after.etag)})

    # -- namespaces ------------------------------------------------------------------------

    def _namespaces(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for entry in self.store.entries():
            found.setdefault(entry.server.namespace, []).append(entry.server.key)
        return found

    def _namespace(self, namespace: str) -> list[str]:
        servers = self._namespaces().get(namespace)
        if not servers:
            raise Gone(f"no namespace {namespace!r} (a namespace exists while it has servers)")
        return servers

    async def list_namespaces(self, request: web.Request) -> web.Response:
        found = self._namespaces()
        return _respond(request, {"namespaces": [{"name": ns, "servers": found[ns]} for ns in sorted(found)]})

    async def get_namespace(self, request: web.Request) -> web.Response:
        namespace = request.match_info["ns"]
        return _respond(request, {"name": namespace, "servers": self._namespace(namespace)})

    async def put_namespace(self, request: web.Request) -> web.Response:
        namespace = request.match_info["ns"]
        if not _DNS_LABEL.fullmatch(namespace):
            raise Invalid(
                [
                    Problem(
                        self.store.description, "namespace", "lowercase letters, digits and '-', at most 63"
                    )
                ]
            )
        servers = self._namespaces().get(namespace)
        if not servers:
            return _error(
                409,
                f"namespace {namespace!r} has no servers: namespaces exist only through their servers; "
                f"create one with POST /v1/servers (namespace: {namespace})",
            )
        return _respond(request, {"name": namespace, "servers": servers})

    async def delete_namespace(self, request: web.Request) -> web.Response:
        namespace = request.match_info["ns"]
        servers = self._namespace(namespace)
        if request.query.get("cascade", "").lower() not in ("1", "true", "yes"):
            return _error(
                409,
                f"namespace {namespace!r} still has servers; delete them or use ?cascade=true",
                servers=servers,
            )
        deleted: list[str] = []
        remaining = list(servers)
        # Servers may include each other's tools; a server is deletable once nothing includes it,
        # so keep going while each round makes progress. This is not atomic: what was deleted
        # before a refusal stays deleted, and the answer says which.
        while remaining:
            problems: list[Problem] = []
            progressed = False
            for key in list(remaining):
                try:
                    await self.store.delete(key)
                except Invalid as error:
                    problems.extend(error.problems)
                    continue
                except NotFound:
                    pass  # deleted meanwhile by someone else: just as gone
                remaining.remove(key)
                deleted.append(key)
                progressed = True
            if not progressed:
                return _error(
                    422,
                    f"cannot delete every server of namespace {namespace!r}",
                    problems=_problems(problems),
                    deleted=deleted,
                    remaining=remaining,
                )
        return _respond(request, {"deleted": deleted})

    # -- session keys ----------------------------------------------------------------------

    def _session_keys(self) -> SessionKeys:
        if self.sessions is None:
            raise Gone("sessions are not configured on this control plane")
        return self.sessions

    async def list_session_keys(self, request: web.Request) -> web.Response:
        return _respond(request, self._session_keys().describe())

    async def rotate_session_keys(self, request: web.Request) -> web.Response:
        sessions = self._session_keys()
        # An empty body is a rotation with the default grace.
        document = await _body(request) if (await request.read()).strip() else {}
        grace = _grace_seconds(document)
        try:
            await sessions.rotate(grace)
        except (RotationRefused, RotationConflict) as error:
            return _error(409, str(error))
        except KeyStoreUnavailable as error:
            log.error("admin_store_unavailable", path=request.path, error=str(error))
            return _error(503, str(error))
        return _respond(request, sessions.describe())

    # -- plumbing --------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        write = request.method not in ("GET", "HEAD", "OPTIONS")
        # `/status` names files, peer addresses and every node's errors, `/metrics` node ids
        # and the revision: guarded like the registry reads (open on loopback only; elsewhere
        # a scraper sends the token). `/healthz` says nothing and stays open.
        guarded = request.path.startswith("/v1/") or request.path in ("/status", "/metrics")
        scrape = request.path == "/metrics"
        access = self.authorizer.access(request, write, scrape=scrape) if guarded else FULL_ACCESS
        if access is None:
            log.warning("admin_unauthorized", method=request.method, path=request.path, remote=request.remote)
            if write and not self.authorizer.writes_enabled:
                return _error(403, "writes are disabled: no admin token is configured (MCPGW_ADMIN_TOKEN)")
            return web.json_response(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="mcpgw-admin"'},
            )
        if access.namespace is not None and not _in_scope(request, access.namespace):
            log.warning(
                "admin_out_of_scope", method=request.method, path=request.path,
                namespace_scope=access.namespace, remote=request.remote,
            )  # fmt: skip
            return _error(403, f"this token may only use namespace {access.namespace!r}")
        request[_SCOPE] = access.namespace
        response = await self._handle(request, handler)
        if write:
            log.info(
                "admin_write",
                method=request.method,
                path=request.path,
                status=response.status,
                remote=request.remote,
                **({"namespace_scope": access.namespace} if access.namespace else {}),
            )
        return response

    async def _handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as error:
            return _error(400, str(error))
        except OutOfScope as error:
            log.warning("admin_out_of_scope", method=request.method, path=request.path, reason=str(error))
            return _error(403, str(error))
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body larger than {_MAX_BODY} bytes")
        except StoreUnavailable as error:
            # Nothing was written; the gateway keeps serving what it has.
            log.error("admin_store_unavailable", path=request.path, error=str(error))
            return _error(503, str(error))
        except Invalid as error:
            self.store.events.invalid("write")
            return _error(422, "invalid document", problems=_problems(error.problems))
        except ApplyFailed as error:
            # Nothing was written: the translation that would serve it failed (logged in full).
            return _error(500, str(error))
        except (PreconditionFailed, Conflict) as error:
            current = error.current
            headers = {"ETag": _quote(current)} if current else {}
            message = str(error) if isinstance(error, PreconditionFailed) else "the document changed"
            return web.json_response(
                {"error": f"precondition failed: {message}", "etag": current}, status=412, headers=headers
            )
        except (NotFound, Gone) as error:
            return _error(404, str(error.args[0]) if error.args else "not found")


def create_app(
    store: RegistryStore,
    status: StatusProvider,
    authorizer: Authorizer,
    sessions: SessionKeys | None = None,
) -> web.Application:
    api = AdminApi(store, status, authorizer, sessions)
    app = web.Application(middlewares=[api.middleware], client_max_size=_MAX_BODY)
    server = "/v1/servers/{ns}/{name}"
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/status", api.status)
    app.router.add_get("/v1/servers", api.list_servers)
    app.router.add_post("/v1/servers", api.create_server)
    app.router.add_get(server, api.get_server)
    app.router.add_put(server, api.put_server)
    app.router.add_delete(server, api.delete_server)
    app.router.add_get(server + "/tools", api.list_tools)
    app.router.add_get(server + "/tools/{tool}", api.get_tool)
    app.router.add_put(server + "/tools/{tool}", api.put_tool)
    app.router.add_delete(server + "/tools/{tool}", api.delete_tool)
    app.router.add_get("/v1/namespaces", api.list_namespaces)
    app.router.add_get("/v1/namespaces/{ns}", api.get_namespace)
    app.router.add_put("/v1/namespaces/{ns}", api.put_namespace)
    app.router.add_delete("/v1/namespaces/{ns}", api.delete_namespace)
    app.router.add_get("/v1/session-keys", api.list_session_keys)
    app.router.add_post("/v1/session-keys/rotate", api.rotate_session_keys)
    # Imported here: the consumer routes use this module's helpers.
    from mcpgw.admin.consumers import add_routes

    add_routes(app, store)
    return app
