"""The broker's HTTP side (aiohttp), behind Envoy on loopback.

    GET <any path>            x-mcpgw-sse-channel, x-mcpgw-sse-endpoint (set by the filter)
        → 200 text/event-stream: `event: endpoint`, then `event: message` per published
          message, `: keepalive` comments; `event: error` then the end when the stream is
          ended by the broker (bus lost, client too slow, broker stopping).
        → 400 JSON when a header is missing or malformed, 503 JSON when the bus is down.
    POST /v1/sse/<channel>    body: one JSON-RPC message
        → 202 delivered to ≥ 1 stream, 404 no stream connected, 400 not JSON, 503 bus down.
    POST, DELETE /v1/bridge   the bridge to upstream MCP servers that speak only HTTP+SSE
        (`type: mcp`, `transport: sse`): see `mcpgw.broker.bridge`.

The GET path is whatever the client asked Envoy for (`/mcp/{ns}/{name}/sse`): the broker does
not care, the filter has already checked it and minted the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import time
from dataclasses import dataclass, field

from aiohttp import web

from mcpgw import nesting
from mcpgw.bootstrap import DEFAULT_BROKER_PORT as DEFAULT_PORT
from mcpgw.broker.bridge import BRIDGE_PATH, MAX_UPSTREAM_URL_BYTES, Bridge, BridgeSettings
from mcpgw.broker.bus import Bus, BusUnavailable, MemoryBus, Stream, StreamClosed
from mcpgw.limits import fd_reserve, raise_fd_limit
from mcpgw.log import get_logger

log = get_logger(__name__)

CHANNEL_HEADER = "x-mcpgw-sse-channel"
ENDPOINT_HEADER = "x-mcpgw-sse-endpoint"
# The address of the client's connection to Envoy, set by Envoy's `/sse` route (never the
# client's): the key of the per-client stream limit.
CLIENT_HEADER = "x-mcpgw-client"
# The filter sends 32 hex characters (a 128-bit nonce); anything of this shape is accepted, so
# a channel is always a safe Redis channel suffix and URL path segment.
CHANNEL_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
DEFAULT_KEEPALIVE = 15.0


@dataclass(frozen=True)
class BrokerSettings:
    keepalive: float = DEFAULT_KEEPALIVE
    # Undelivered messages one stream may hold before it is ended as too slow.
    queue_limit: int = 256
    # A write the client does not drain within this long ends the stream (it stopped reading).
    write_timeout: float = 10.0
    max_message_bytes: int = 8 * 1024 * 1024
    # Open streams, in all and per client address (each holds a file descriptor here and two in
    # Envoy for its whole life); the stream over either limit is refused with 429. 0: no limit.
    max_streams: int = 10_000
    max_streams_per_client: int = 100
    bridge: BridgeSettings = field(default_factory=BridgeSettings.from_env)


BUS = web.AppKey("bus", Bus)
SETTINGS = web.AppKey("settings", BrokerSettings)
BRIDGE = web.AppKey("bridge", Bridge)


@dataclass
class StreamCounts:
    """Open streams, in all and per client; streams refused for a limit (for the operator)."""

    total: int = 0
    per_client: dict[str, int] = field(default_factory=dict)
    refused: int = 0

    def admit(self, client: str, settings: BrokerSettings) -> str | None:
        """Counts a new stream of `client` in, or says which limit refuses it."""
        if settings.max_streams and self.total >= settings.max_streams:
            return f"too many SSE streams are open on this gateway (limit {settings.max_streams})"
        held = self.per_client.get(client, 0)
        if settings.max_streams_per_client and held >= settings.max_streams_per_client:
            return f"too many SSE streams are open from this client (limit {settings.max_streams_per_client})"
        self.total += 1
        self.per_client[client] = held + 1
        return None

    def release(self, client: str) -> None:
        self.total -= 1
        left = self.per_client[client] - 1
        if left:
            self.per_client[client] = left
        else:
            del self.per_client[client]


COUNTS = web.AppKey("counts", StreamCounts)


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _event(name: str, data: bytes) -> bytes:
    # SSE `data:` may not contain a line break; a multi-line payload becomes several `data:`
    # lines, which the client joins back with "\n" (valid JSON stays valid JSON).
    lines = data.splitlines() or [b""]
    return b"event: " + name.encode() + b"\n" + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


async def open_stream(request: web.Request) -> web.StreamResponse:
    channel = request.headers.get(CHANNEL_HEADER, "")
    endpoint = request.headers.get(ENDPOINT_HEADER, "")
    if not CHANNEL_RE.fullmatch(channel):
        return _json_error(400, f"missing or malformed {CHANNEL_HEADER} header (the gateway filter sets it)")
    if not endpoint or not endpoint.isprintable():
        return _json_error(400, f"missing or malformed {ENDPOINT_HEADER} header (the gateway filter sets it)")
    bus, settings, counts = request.app[BUS], request.app[SETTINGS], request.app[COUNTS]
    client = request.headers.get(CLIENT_HEADER) or request.remote or "unknown"
    refused = counts.admit(client, settings)
    if refused is not None:
        counts.refused += 1
        log.warning(
            "sse_stream_refused",
            channel=channel,
            client=client,
            error=refused,
            open=counts.total,
            refused_total=counts.refused,
        )
        return _json_error(429, refused + "; close a stream and retry")
    try:
        return await _serve_stream(request, channel, endpoint, bus, settings)
    finally:
        counts.release(client)


async def _serve_stream(
    request: web.Request, channel: str, endpoint: str, bus: Bus, settings: BrokerSettings
) -> web.StreamResponse:
    stream = Stream(channel, settings.queue_limit)
    try:
        await bus.subscribe(stream)
    except BusUnavailable as error:
        log.warning("sse_stream_refused", channel=channel, error=str(error))
        return _json_error(503, str(error))
    started = time.monotonic()
    log.info("sse_stream_opened", channel=channel, path=request.path, bus=bus.description)
    reason = "client disconnected"
    response = web.StreamResponse(
        status=200, headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
    )
    try:
        await response.prepare(request)

        async def send(data: bytes) -> None:
            await asyncio.wait_for(response.write(data), settings.write_timeout)

        await send(_event("endpoint", endpoint.encode()))
        while True:
            try:
                message = await stream.get(settings.keepalive)
            except StreamClosed as closed:
                reason = closed.reason
                await send(_event("error", json.dumps({"error": closed.reason}).encode()))
                break
            await send(b": keepalive\n\n" if message is None else _event("message", message))
    except TimeoutError:
        reason = f"client did not read for {settings.write_timeout}s"
        if request.transport is not None:
            request.transport.abort()
    except ConnectionError:
        pass  # the client went away while we wrote (a disconnect otherwise cancels the handler)
    finally:
        bus.unsubscribe(stream)
        log.info(
            "sse_stream_closed",
            channel=channel,
            reason=reason,
            messages=stream.delivered,
            seconds=round(time.monotonic() - started, 1),
        )
    return response


async def publish(request: web.Request) -> web.Response:
    channel = request.match_info["channel"]
    if not CHANNEL_RE.fullmatch(channel):
        return _json_error(400, "malformed channel")
    body = await request.read()
    try:
        message = nesting.loads(body)
    except ValueError:
        message = None
    if not isinstance(message, dict | list):
        return _json_error(400, "the body must be one JSON-RPC message (JSON)")
    try:
        receivers = await request.app[BUS].publish(channel, body)
    except BusUnavailable as error:
        log.error("sse_publish_failed", channel=channel, error=str(error))
        return _json_error(503, str(error))
    if receivers == 0:
        log.info("sse_publish_unrouted", channel=channel)
        return _json_error(404, "no SSE stream is connected for this session")
    return web.json_response({"receivers": receivers}, status=202)


def create_app(bus: Bus, settings: BrokerSettings | None = None) -> web.Application:
    settings = settings or BrokerSettings()
    app = web.Application(client_max_size=settings.max_message_bytes)
    app[BUS] = bus
    app[SETTINGS] = settings
    app[COUNTS] = StreamCounts()
    bridge = app[BRIDGE] = Bridge(settings.bridge)

    async def start_bridge(_: web.Application) -> None:
        await bridge.start()

    async def end_bridge_sessions(_: web.Application) -> None:
        # Before the server waits for handlers: requests waiting on a bridge session end now.
        await bridge.close_sessions("session broker stopping")

    async def close_bridge(_: web.Application) -> None:
        await bridge.close()

    app.on_startup.append(start_bridge)
    app.on_shutdown.append(end_bridge_sessions)
    app.on_cleanup.append(close_bridge)
    app.router.add_post("/v1/sse/{channel}", publish)
    app.router.add_post(BRIDGE_PATH, bridge.handle_post)
    app.router.add_delete(BRIDGE_PATH, bridge.handle_delete)
    app.router.add_get("/{path:.*}", open_stream, allow_head=False)
    return app


class Broker:
    """The bus and the HTTP server together: what `mcpgw broker`, `serve` and `up` run."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        redis_url: str | None = None,
        settings: BrokerSettings | None = None,
        bus: Bus | None = None,
    ) -> None:
        if bus is None:
            if redis_url:
                from mcpgw.broker.redisbus import RedisBus

                bus = RedisBus(redis_url)
            else:
                bus = MemoryBus()
        self.bus = bus
        self.host = host
        self.port = port
        self.settings = settings or BrokerSettings()
        self._runner: web.AppRunner | None = None
        # The bridge to HTTP+SSE upstreams (`mcpgw.broker.bridge`), once started.
        self.bridge: Bridge | None = None
        # The open-stream counts (`StreamCounts`), once started: read by the control plane's /metrics.
        self.counts: StreamCounts | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        # Each stream holds a descriptor here: more streams than descriptors would fail
        # accepts (and Redis reconnects) instead of refusing the stream over the limit.
        fds = raise_fd_limit()
        budget = max(1, fds - fd_reserve(fds))
        if not self.settings.max_streams or self.settings.max_streams > budget:
            log.warning(
                "broker_streams_capped", max_streams=self.settings.max_streams, fd_limit=fds, cap=budget
            )
            self.settings = dataclasses.replace(self.settings, max_streams=budget)
        await self.bus.start()
        # handler_cancellation: a client that disconnects cancels its stream handler at once,
        # so its subscription is released now, not at the next keep-alive write.
        app = create_app(self.bus, self.settings)
        self.bridge = app[BRIDGE]
        self.counts = app[COUNTS]
        # max_field_size: an HTTP+SSE upstream's URL carries its CA bundle to the bridge
        # (`x-mcpgw-upstream-url`, `ClientTls.fragment`), larger than aiohttp's 8 KiB default.
        runner = web.AppRunner(
            app,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=2,
            max_field_size=MAX_UPSTREAM_URL_BYTES,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            sockets = getattr(site._server, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1])
        except BaseException as error:
            await runner.cleanup()
            await self.bus.close()
            if isinstance(error, OSError):
                raise OSError(f"session broker cannot listen on {self.host}:{self.port}: {error}") from error
            raise
        self._runner = runner
        log.info("broker_ready", url=self.url, bus=self.bus.description, keepalive=self.settings.keepalive)

    async def stop(self) -> None:
        # Ending the streams first lets their handlers return, so the server shuts down at once.
        await self.bus.close()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None
