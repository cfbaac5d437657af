"""The bridge: upstream MCP servers that speak only HTTP+SSE (2024-11-05), behind the gateway.

A `type: mcp` server with `transport: sse` is proxied by the filter exactly like a Streamable
HTTP upstream, except that every upstream call goes to this broker (cluster `mcpgw-broker`,
path `/v1/bridge`) with the upstream's SSE URL in `x-mcpgw-upstream-url`. The filter cannot hold
a long-lived GET stream; the broker can. So the bridge answers like a Streamable HTTP upstream
that returns JSON only, and speaks HTTP+SSE to the upstream:

    POST /v1/bridge   x-mcpgw-upstream-url: http(s)://host:port/sse[#mcpgw-tls=…]   (else 400)
      no mcp-session-id, an `initialize` request:
          GET <url> (accept: text/event-stream) → wait for the `endpoint` event → POST the
          message there → wait for the response with its id on the stream
          → 200 application/json, the response, `mcp-session-id: <bridge session id>`
      no mcp-session-id, anything else → 400
      mcp-session-id of an open bridge session for that URL:
          POST the message to the session's endpoint; a request → 200 with its response from
          the stream (none in time → 504), a notification or response → 202
      mcp-session-id unknown (expired, ended, its upstream stream lost, another replica's) → 404
    DELETE /v1/bridge with mcp-session-id → the upstream stream is closed, 204 (unknown → 404)

Failures are JSON-RPC errors with the request's id (-32603 naming the upstream): upstream
unreachable or answering an error → 502, no answer in time → 504; a 4xx JSON-RPC error of the
upstream's passes with its status. The query string of the bridge request (credentials the
filter puts in the query) is added to the upstream's SSE and message URLs; the request's
headers are forwarded (credentials) except hop-by-hop ones, `host`, `content-length`,
`mcp-session-id`, `x-mcpgw-*` and `x-envoy-*`.

An https upstream is verified like an Envoy backend cluster (`mcpgw.registry.tls`): against the
system CAs and the URL's host by default; its `backend.tls` settings (own CA, `serverName`,
`insecureSkipVerify`) arrive in the URL's fragment, which the control plane writes and HTTP never
sends. Client certificates are Envoy's only: `transport: sse` refuses them.

Bridge sessions live in this broker only: a session opened through another replica's broker
is unknown here (404), and the client starts a new one. Server-to-client requests and
notifications on the upstream stream are dropped (debug log): the filter answers clients with
JSON, which has no room for them. The broker connects to upstreams itself, not through Envoy
(whoever reaches the broker can make it connect anywhere: only Envoy may reach it, on loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from mcpgw import nesting
from mcpgw.log import get_logger
from mcpgw.registry.tls import ClientTls

log = get_logger(__name__)

BRIDGE_PATH = "/v1/bridge"
UPSTREAM_URL_HEADER = "x-mcpgw-upstream-url"
# The URL with its TLS settings (a CA bundle of up to 64 KiB, base64-encoded) in the fragment.
MAX_UPSTREAM_URL_BYTES = 128 << 10
# Distinct TLS settings whose SSL contexts are kept (one per upstream CA, in practice).
_MAX_CONTEXTS = 256
SESSION_HEADER = "mcp-session-id"
# Envoy tells the upstream how long it will wait (the filter's timeout_ms for the call).
ENVOY_TIMEOUT_HEADER = "x-envoy-expected-rq-timeout-ms"
# Answer this long before Envoy gives up, so the client gets the bridge's 504 and its reason.
TIMEOUT_MARGIN = 0.25
INTERNAL_ERROR = -32603
INVALID_REQUEST = -32600
PARSE_ERROR = -32700

# Hop-by-hop (RFC 9110 7.6.1) and headers the bridge sets itself or that name the gateway's
# internals: never forwarded to the upstream.
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        SESSION_HEADER,
    }
)
_NOT_FORWARDED_PREFIXES = ("x-mcpgw-", "x-envoy-")
_LINE_END = re.compile(rb"[\r\n]")


@dataclass(frozen=True)
class BridgeSettings:
    # A bridge session no request used for this long is closed (its upstream stream with it).
    idle_timeout: float = 600.0
    max_sessions: int = 10_000
    # How long a request waits for its answer when Envoy does not say (x-envoy-expected-rq-timeout-ms).
    timeout: float = 10.0
    # One upstream event, and one upstream answer to a POST, may be this large.
    max_event_bytes: int = 8 * 1024 * 1024

    @classmethod
    def from_env(cls) -> BridgeSettings:
        """Defaults, with `MCPGW_BRIDGE_IDLE_SECONDS` and `MCPGW_BRIDGE_MAX_SESSIONS` when set."""
        idle = os.environ.get("MCPGW_BRIDGE_IDLE_SECONDS", "").strip()
        most = os.environ.get("MCPGW_BRIDGE_MAX_SESSIONS", "").strip()
        try:
            return cls(
                idle_timeout=float(idle) if idle else cls.idle_timeout,
                max_sessions=int(most) if most else cls.max_sessions,
            )
        except ValueError as error:
            raise ValueError(f"MCPGW_BRIDGE_IDLE_SECONDS / MCPGW_BRIDGE_MAX_SESSIONS: {error}") from None


# What a client reads when an upstream failed; the details (URL, reason) are logged.
UPSTREAM_UNAVAILABLE = "upstream MCP server is unavailable"


def _upstream(request: web.Request) -> str:
    return request.headers.get(UPSTREAM_URL_HEADER, "")


class BridgeError(Exception):
    """A request the bridge answers with an error: HTTP `status`, a JSON-RPC error `message`."""

    def __init__(
        self, status: int, message: str, code: int = INTERNAL_ERROR, body: bytes | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        # The upstream's own JSON-RPC error, passed on as is.
        self.body = body


class SessionLost(Exception):
    """The bridge session ended while a request waited on it."""


class EventTooLarge(Exception):
    pass


def _new_future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


@dataclass(eq=False)
class BridgeSession:
    id: str
    url: str
    # The upstream's `backend.tls` settings (None: verified against the system CAs, by its host).
    tls: ClientTls | None = None
    response: aiohttp.ClientResponse | None = None
    endpoint: URL | None = None
    endpoint_ready: asyncio.Future[str] = field(default_factory=_new_future)
    # JSON-RPC request id (as JSON text) → the waiting request's future (the response's bytes).
    pending: dict[str, asyncio.Future[bytes]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None
    opened: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    requests: int = 0
    closed: str | None = None

    def busy(self) -> bool:
        return bool(self.pending)


def _id_key(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _rpc_error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _snippet(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").strip()


def _with_query(url: URL, query: str) -> URL:
    """`url` with the bridge request's raw query string appended (credentials stay byte for byte)."""
    if not query:
        return url
    joined = f"{url.raw_query_string}&{query}" if url.raw_query_string else query
    return URL(f"{url.with_query(None).with_fragment(None)}?{joined}", encoded=True)


def upstream_url(text: str) -> URL:
    """The `x-mcpgw-upstream-url` value as a URL; BridgeError 400 unless absolute http(s)."""
    try:
        url = URL(text)
    except ValueError:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host or not text.isprintable():
        raise BridgeError(400, f"Bad Request: {UPSTREAM_URL_HEADER} must be an http:// or https:// URL")
    return url


def upstream_target(text: str) -> tuple[URL, ClientTls | None]:
    """The upstream's URL (without fragment) and the TLS settings its fragment carries."""
    url = upstream_url(text)
    try:
        tls = ClientTls.from_fragment(url.raw_fragment)
    except ValueError as error:
        raise BridgeError(400, f"Bad Request: {UPSTREAM_URL_HEADER}: {error}") from None
    if tls is not None and url.scheme != "https":
        raise BridgeError(400, f"Bad Request: {UPSTREAM_URL_HEADER}: TLS settings for an http:// URL")
    return url.with_fragment(None), tls


def forwarded_headers(headers: Any) -> dict[str, str]:
    """The request's headers that go upstream (credentials and the like)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in _NOT_FORWARDED or lower.startswith(_NOT_FORWARDED_PREFIXES):
            continue
        out[lower] = value
    return out


async def sse_events(content: aiohttp.StreamReader, max_bytes: int) -> AsyncIterator[tuple[str, str]]:
    """Server-sent events (HTML Living Standard, "event stream interpretation") as (event, data).

    Lines end in CRLF, LF or CR; `:` starts a comment; one space after the colon is dropped; a
    blank line dispatches the event (`message` when unnamed, none without data). An event still
    open when the stream ends is discarded, as the standard says. A line or an event larger than
    `max_bytes` raises EventTooLarge (the stream cannot be trusted past it).
    """
    buffer = bytearray()
    scanned = 0
    event = ""
    data: list[bytes] = []
    size = 0
    async for chunk in content.iter_any():
        buffer += chunk
        while True:
            match = _LINE_END.search(buffer, scanned)
            if match is None:
                scanned = len(buffer)
                if len(buffer) > max_bytes:
                    raise EventTooLarge(f"an upstream event line is over {max_bytes} bytes")
                break
            end = match.start()
            if buffer[end] == 0x0D and end + 1 == len(buffer):
                scanned = end  # a CR at the end of the chunk may be the first half of CRLF
                break
            skip = 2 if buffer[end] == 0x0D and buffer[end + 1] == 0x0A else 1
            line = bytes(buffer[:end])
            del buffer[: end + skip]
            scanned = 0
            if not line:
                if data:
                    yield event or "message", b"\n".join(data).decode("utf-8", "replace")
                event, data, size = "", [], 0
                continue
            if line.startswith(b":"):
                continue
            name, colon, value = line.partition(b":")
            if colon and value.startswith(b" "):
                value = value[1:]
            if name == b"event":
                event = value.decode("utf-8", "replace")
            elif name == b"data":
                size += len(value) + 1
                if size > max_bytes:
                    raise EventTooLarge(f"an upstream event is over {max_bytes} bytes")
                data.append(value)


class Bridge:
    """The bridge sessions of one broker, and the HTTP client that holds their upstream streams."""

    def __init__(self, settings: BridgeSettings | None = None) -> None:
        self.settings = settings or BridgeSettings()
        self.sessions: dict[str, BridgeSession] = {}
        self._http: aiohttp.ClientSession | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._contexts: dict[ClientTls, ssl.SSLContext] = {}

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        # No connection limit: each session holds one connection for its stream, and sessions
        # are bounded by max_sessions. Reads have no timeout: streams are idle for long.
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            auto_decompress=True,
        )
        self._sweeper = asyncio.create_task(self._sweep(), name="mcpgw-bridge-idle")

    async def close_sessions(self, reason: str) -> None:
        for session in list(self.sessions.values()):
            await self._close(session, reason)

    async def close(self) -> None:
        await self.close_sessions("session broker stopping")
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _sweep(self) -> None:
        idle = self.settings.idle_timeout
        interval = max(0.05, min(idle / 2, 30.0))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if not session.busy() and session.endpoint is not None and now - session.last_used >= idle:
                    try:
                        await self._close(session, f"idle for {idle:g}s")
                    except Exception as error:  # the sweep must go on for the other sessions
                        log.error("bridge_close_failed", session=session.id, error=repr(error))

    async def _close(self, session: BridgeSession, reason: str) -> None:
        """Ends `session` once: forgotten, waiting requests failed, upstream stream closed."""
        if session.closed is not None:
            return
        session.closed = reason
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
        if not session.endpoint_ready.done():
            session.endpoint_ready.set_exception(SessionLost(reason))
            session.endpoint_ready.exception()  # retrieved: nobody may be waiting any more
        for future in session.pending.values():
            if not future.done():
                future.set_exception(SessionLost(reason))
                future.exception()
        session.pending.clear()
        if session.response is not None:
            session.response.close()
        reader = session.reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        log.info(
            "bridge_session_closed",
            session=session.id,
            upstream=session.url,
            reason=reason,
            requests=session.requests,
            seconds=round(time.monotonic() - session.opened, 1),
        )

    def _tls(self, session: BridgeSession) -> dict[str, Any]:
        """aiohttp's TLS arguments for `session`'s upstream: its own settings, else the defaults."""
        if session.tls is None:
            return {}
        context = self._contexts.get(session.tls)
        if context is None:
            if len(self._contexts) >= _MAX_CONTEXTS:
                self._contexts.clear()
            context = self._contexts[session.tls] = session.tls.ssl_context()
        arguments: dict[str, Any] = {"ssl": context}
        if session.tls.server_name:
            arguments["server_hostname"] = session.tls.server_name
        return arguments

    # --- HTTP handlers -------------------------------------------------------------------

    async def handle_post(self, request: web.Request) -> web.StreamResponse:
        request_id: Any = None
        try:
            url, tls = upstream_target(request.headers.get(UPSTREAM_URL_HEADER, ""))
            body = await request.read()
            try:
                message = nesting.loads(body)
            except ValueError:
                raise BridgeError(400, "Parse error: the body is not JSON", PARSE_ERROR) from None
            if not isinstance(message, dict):
                raise BridgeError(400, "Invalid Request: one JSON-RPC message (an object)", INVALID_REQUEST)
            request_id = message.get("id")
            is_request = "method" in message and request_id is not None
            timeout = self._timeout(request)
            session_id = request.headers.get(SESSION_HEADER, "")
            if not session_id:
                if not is_request or message.get("method") != "initialize":
                    raise BridgeError(
                        400,
                        "Bad Request: Mcp-Session-Id header is required (only initialize opens a session)",
                        INVALID_REQUEST,
                    )
                async with asyncio.timeout(timeout):
                    return await self._initialize(request, url, tls, body, request_id, timeout)
            session = self.sessions.get(session_id)
            if session is None or session.url != str(url) or session.tls != tls:
                raise BridgeError(404, "Session not found", INVALID_REQUEST)
            async with asyncio.timeout(timeout):
                answer = await self._send(session, request, body, request_id if is_request else None)
            if answer is None:
                return web.Response(status=202)
            return web.Response(status=200, body=answer, content_type="application/json")
        except BridgeError as error:
            if error.body is not None:
                return web.Response(status=error.status, body=error.body, content_type="application/json")
            message = error.message
            if error.status == 502:
                # The upstream's URL, its words and aiohttp's reason are for the operator only.
                log.warning("bridge_upstream_failed", upstream=_upstream(request), error=message)
                message = UPSTREAM_UNAVAILABLE
            return web.json_response(_rpc_error(request_id, error.code, message), status=error.status)
        except aiohttp.ClientError as error:
            log.warning("bridge_upstream_failed", upstream=_upstream(request), error=repr(error))
            return web.json_response(_rpc_error(request_id, INTERNAL_ERROR, UPSTREAM_UNAVAILABLE), status=502)
        except TimeoutError:
            message = f"upstream MCP server did not answer within {self._timeout(request):g}s"
            log.warning("bridge_upstream_timeout", upstream=_upstream(request), error=message)
            return web.json_response(_rpc_error(request_id, INTERNAL_ERROR, message), status=504)

    async def handle_delete(self, request: web.Request) -> web.Response:
        try:
            url, tls = upstream_target(request.headers.get(UPSTREAM_URL_HEADER, ""))
        except BridgeError as error:
            return web.json_response(_rpc_error(None, error.code, error.message), status=error.status)
        session_id = request.headers.get(SESSION_HEADER, "")
        if not session_id:
            message = "Bad Request: Mcp-Session-Id header is required"
            return web.json_response(_rpc_error(None, INVALID_REQUEST, message), status=400)
        session = self.sessions.get(session_id)
        if session is None or session.url != str(url) or session.tls != tls:
            return web.json_response(_rpc_error(None, INVALID_REQUEST, "Session not found"), status=404)
        await self._close(session, "ended by the client (DELETE)")
        return web.Response(status=204)

    def _timeout(self, request: web.Request) -> float:
        hint = request.headers.get(ENVOY_TIMEOUT_HEADER, "")
        if hint.isdigit() and int(hint) > 0:
            return max(0.05, int(hint) / 1000 - TIMEOUT_MARGIN)
        return self.settings.timeout

    # --- sessions ------------------------------------------------------------------------

    async def _initialize(
        self,
        request: web.Request,
        url: URL,
        tls: ClientTls | None,
        body: bytes,
        request_id: Any,
        timeout: float,
    ) -> web.Response:
        if len(self.sessions) >= self.settings.max_sessions:
            log.warning("bridge_session_refused", upstream=str(url), sessions=len(self.sessions))
            raise BridgeError(503, f"the session broker holds {self.settings.max_sessions} bridge sessions")
        session = BridgeSession(id=secrets.token_urlsafe(24), url=str(url), tls=tls)
        self.sessions[session.id] = session  # counted while it opens
        try:
            await self._connect(session, request, url)
            answer = await self._send(session, request, body, request_id)
        except BaseException as error:
            reason = error.message if isinstance(error, BridgeError) else type(error).__name__
            if isinstance(error, asyncio.CancelledError):
                # The request's deadline (asyncio.timeout cancels), or Envoy gave up on it.
                reason = f"no answer to initialize within {timeout:g}s, or the gateway stopped waiting"
            await self._close(session, f"not opened: {reason}")
            raise
        assert answer is not None
        return web.Response(
            status=200, body=answer, content_type="application/json", headers={SESSION_HEADER: session.id}
        )

    async def _connect(self, session: BridgeSession, request: web.Request, url: URL) -> None:
        """The upstream GET, up to its `endpoint` event; the stream is then read by a task."""
        assert self._http is not None, "the bridge is not started"
        headers = forwarded_headers(request.headers)
        headers.pop("content-type", None)
        headers["accept"] = "text/event-stream"
        headers["cache-control"] = "no-cache"
        try:
            response = await self._http.get(
                _with_query(url, request.rel_url.raw_query_string), headers=headers, **self._tls(session)
            )
        except aiohttp.ClientError as error:
            raise BridgeError(502, f"upstream MCP server {url} is unreachable: {error}") from error
        session.response = response
        if response.status != 200 or response.content_type != "text/event-stream":
            text = _snippet(await _read_limited(response, 4096))
            raise BridgeError(
                502,
                f"upstream MCP server {url} answered the SSE GET with HTTP {response.status} "
                f"({response.content_type or 'no content-type'}){': ' + text if text else ''}",
            )
        session.reader = asyncio.create_task(self._read(session), name=f"mcpgw-bridge-{session.id[:8]}")
        try:
            data = await asyncio.shield(session.endpoint_ready)
        except SessionLost as lost:
            raise BridgeError(502, f"upstream MCP server {url} {lost}") from None
        endpoint = url.join(URL(data.strip()))
        if (endpoint.scheme, endpoint.host, endpoint.port) != (url.scheme, url.host, url.port):
            # Credentials are forwarded to the endpoint: only to the origin the operator named.
            raise BridgeError(502, f"upstream MCP server {url} named an endpoint on another origin: {data!r}")
        session.endpoint = _with_query(endpoint, request.rel_url.raw_query_string)
        log.info("bridge_session_opened", session=session.id, upstream=session.url, endpoint=str(endpoint))

    async def _read(self, session: BridgeSession) -> None:
        assert session.response is not None
        reason = "upstream stream ended"
        try:
            async for event, data in sse_events(session.response.content, self.settings.max_event_bytes):
                if event == "endpoint":
                    if not session.endpoint_ready.done():
                        session.endpoint_ready.set_result(data)
                elif event == "message":
                    self._deliver(session, data)
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, ConnectionError) as error:
            reason = f"upstream stream lost: {error or type(error).__name__}"
        except (EventTooLarge, ValueError) as error:
            reason = f"upstream stream unreadable: {error}"
        except Exception as error:
            # Anything else (a RecursionError parsing a deeply nested event, a bug) must still
            # close the session: a reader that just died would leave its requests hanging.
            log.error("bridge_reader_failed", exc_info=True, session=session.id, error=repr(error))
            reason = f"upstream stream unreadable: {type(error).__name__}"
        await self._close(session, reason)

    def _deliver(self, session: BridgeSession, data: str) -> None:
        try:
            message = nesting.loads(data)
        except ValueError:
            message = None
        if (
            isinstance(message, dict)
            and "method" not in message
            and ("result" in message or "error" in message)
            and "id" in message
        ):
            future = session.pending.pop(_id_key(message["id"]), None)
            if future is not None and not future.done():
                future.set_result(data.encode())
                return
        # Server-to-client requests and notifications (or answers nobody waits for any more)
        # have no way to the client: the filter answers it with one JSON response.
        method = message.get("method") if isinstance(message, dict) else None
        log.debug("bridge_message_dropped", session=session.id, upstream=session.url, method=method)

    async def _send(
        self, session: BridgeSession, request: web.Request, body: bytes, request_id: Any
    ) -> bytes | None:
        """POSTs `body` to the session's endpoint; the response from the stream for a request
        (`request_id` not None), None for a notification or response."""
        assert self._http is not None and session.endpoint is not None
        session.last_used = time.monotonic()
        session.requests += 1
        future: asyncio.Future[bytes] | None = None
        key = _id_key(request_id)
        if request_id is not None:
            if key in session.pending:
                message = f"Invalid Request: request id {key} is already pending in this session"
                raise BridgeError(400, message, INVALID_REQUEST)
            # Registered before the POST: the answer may be on the stream before the POST returns.
            future = asyncio.get_running_loop().create_future()
            session.pending[key] = future
        try:
            headers = forwarded_headers(request.headers)
            headers["content-type"] = "application/json"
            try:
                async with self._http.post(
                    session.endpoint, data=body, headers=headers, **self._tls(session)
                ) as response:
                    answer = await _read_limited(response, self.settings.max_event_bytes)
                    status = response.status
            except aiohttp.ClientError as error:
                message = f"upstream MCP server {session.url} is unreachable: {error}"
                raise BridgeError(502, message) from error
            if status == 404:
                # The upstream forgot the session (restarted, expired): the client starts over.
                await self._close(session, "the upstream answered 404 to a message")
                raise BridgeError(404, "Session not found", INVALID_REQUEST)
            if not 200 <= status < 300:
                if 400 <= status < 500 and _is_rpc_error(answer):
                    raise BridgeError(status, "", body=answer)
                text = _snippet(answer)
                message = f"upstream MCP server {session.url} answered HTTP {status}"
                raise BridgeError(502, f"{message}: {text}" if text else message)
            if future is None:
                return None
            try:
                return await asyncio.shield(future)
            except SessionLost as lost:
                raise BridgeError(502, f"upstream MCP server {session.url}: {lost}") from None
        finally:
            if future is not None and session.pending.get(key) is future:
                del session.pending[key]
            session.last_used = time.monotonic()


def _is_rpc_error(body: bytes) -> bool:
    try:
        message = nesting.loads(body)
    except ValueError:
        return False
    return isinstance(message, dict) and isinstance(message.get("error"), dict)


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    data = bytearray()
    while chunk := await response.content.read(limit + 1 - len(data)):
        data += chunk
        if len(data) > limit:
            raise BridgeError(502, f"upstream MCP server {response.url} answered over {limit} bytes")
    return bytes(data)
