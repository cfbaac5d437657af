"""gRPC ADS server: carries SotwStream and DeltaStream decisions over ADS.

StreamAggregatedResources speaks State of the World (sotw.py), DeltaAggregatedResources speaks
incremental xDS (delta.py); Envoy picks one with its bootstrap's `ads_config.api_type`
(GRPC or DELTA_GRPC). Both run the same loop below and report through the same `status()`.

Each stream runs one loop fed by a mailbox: requests read from Envoy and "snapshot changed"
signals from the cache go through the same queue, so a stream's state is only ever touched by
its own loop and responses leave in the order decisions were made (PUSH_ORDER included).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DiscoveryRequest
from google.protobuf.message import Message

from mcpgw.log import get_logger
from mcpgw.xds.cache import SnapshotCache, Watch
from mcpgw.xds.delta import DeltaStream
from mcpgw.xds.sotw import SotwStream
from mcpgw.xds.stream import AckHook, Nack, NackHook, StreamBase, StreamMetrics, iso, short_name
from mcpgw.xds.tls import ReloadingCredentials, XdsTls, authorize

log = get_logger(__name__)

# Server-initiated HTTP/2 pings find Envoys that vanished without closing their connection.
_GRPC_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]
_NACK_MEMORY = 1024  # nodes whose last NACKs are kept after they disconnect


class _Signal(Enum):
    SNAPSHOT = "snapshot"
    CLOSE = "close"


_Item = Message | _Signal  # a DiscoveryRequest or DeltaDiscoveryRequest, matching the RPC
_Stream = StreamBase[Any, Any, Any]


class ServerMetrics(StreamMetrics, Protocol):
    """What the server reports beyond its streams' events (`mcpgw.metrics`)."""

    def node_seen(self, node: str) -> None: ...
    def node_gone(self, node: str) -> None: ...
    def check_settled(self) -> None: ...


@dataclass(eq=False, slots=True)
class _Connection:
    """One live ADS stream as the server sees it."""

    stream_id: int
    peer: str
    connected_at: float
    protocol: str
    mailbox: asyncio.Queue[_Item] = field(default_factory=asyncio.Queue)
    stream: _Stream | None = None  # created by the first request, which names the node
    watch: Watch | None = None
    snapshot_pending: bool = False
    # The peer's client certificate (PEM) when the server runs mutual TLS.
    peer_cert: bytes | None = None
    # The server's set of streams with something unanswered (`AdsServer._unsettled`).
    unsettled: set[int] = field(default_factory=set)

    def signal_snapshot(self) -> None:
        # Many snapshots in a burst need one recomputation: the loop reads the latest anyway.
        if not self.snapshot_pending:
            self.snapshot_pending = True
            self.unsettled.add(self.stream_id)
            self.mailbox.put_nowait(_Signal.SNAPSHOT)

    def status(self) -> dict[str, Any]:
        stream = self.stream
        return {
            "node_id": stream.node_id if stream else None,
            "node_cluster": stream.node_cluster if stream else None,
            "connected": True,
            "protocol": self.protocol,
            "stream_id": self.stream_id,
            "peer": self.peer,
            "connected_at": iso(self.connected_at),
            "types": dict(stream.type_status()) if stream else {},
        }


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Aggregated Discovery Service (State of the World and Delta) serving a SnapshotCache."""

    def __init__(
        self,
        cache: SnapshotCache,
        on_nack: NackHook | None = None,
        on_ack: AckHook | None = None,
        tls: XdsTls | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._cache = cache
        # Counts pushes, ACKs and NACKs per node and type; told when a node's last stream closes.
        self._metrics = metrics
        # With TLS, every stream's node must match its client certificate (mcpgw.xds.tls).
        self._tls = tls
        self.credentials: ReloadingCredentials | None = None
        # Observers of every node's ACKs and NACKs (go-control-plane's callbacks): the server
        # only reports them; what to do about a refused resource is the caller's business.
        self._observe_nack = on_nack
        self._observe_ack = on_ack
        self._server: grpc.aio.Server | None = None
        self._port: int | None = None
        self._stopping = False
        self._ids = itertools.count(1)
        self._connections: dict[int, _Connection] = {}
        # Streams with a snapshot to process or a push not ACKed yet, kept up to date event by
        # event so that "has every Envoy ACKed?" costs nothing however many Envoys there are.
        self._unsettled: set[int] = set()
        # node id -> type URL -> last NACK; outlives streams so operators can still see it.
        self._nacks: OrderedDict[str, dict[str, Nack]] = OrderedDict()

    @property
    def port(self) -> int | None:
        return self._port

    async def start(self, host: str = "127.0.0.1", port: int = 18000) -> int:
        """Listen on host:port (0 picks a free port); returns the bound port."""
        if self._server is not None:
            raise RuntimeError("AdsServer already started")
        server = grpc.aio.server(options=_GRPC_OPTIONS)
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, server)
        if self._tls is not None:
            self.credentials = ReloadingCredentials(self._tls)
            bound = server.add_secure_port(f"{host}:{port}", self.credentials.server_credentials())
        else:
            bound = server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"cannot bind ADS server to {host}:{port}")
        await server.start()
        self._server, self._port, self._stopping = server, bound, False
        log.info("ads_started", address=f"{host}:{bound}", tls=self._tls is not None)
        return bound

    async def stop(self, grace: float = 1.0) -> None:
        """Stop accepting streams, end the open ones cleanly, and wait for their handlers."""
        server = self._server
        if server is None:
            return
        self._stopping = True
        stopped = asyncio.ensure_future(server.stop(grace))  # refuses new RPCs right away
        for conn in list(self._connections.values()):
            conn.mailbox.put_nowait(_Signal.CLOSE)
        await stopped
        self._server, self._port = None, None
        log.info("ads_stopped")

    def status(self) -> list[dict[str, Any]]:
        """One entry per live stream, then disconnected nodes that left a NACK behind."""
        live = [conn.status() for conn in self._connections.values()]
        connected = {entry["node_id"] for entry in live}
        for node_id, nacks in self._nacks.items():
            if node_id not in connected:
                live.append(
                    {
                        "node_id": node_id,
                        "connected": False,
                        "types": {short_name(u): {"last_nack": n.to_dict()} for u, n in nacks.items()},
                    }
                )
        return live

    def connected_nodes(self) -> set[str]:
        """Node ids with an open stream."""
        return {c.stream.node_id for c in self._connections.values() if c.stream is not None}

    def unacked(self, nack_answers: bool = True) -> dict[str, float]:
        """Per connected node: seconds its oldest push has waited for an ACK (0: none waits)."""
        now = time.time()
        waiting: dict[str, float] = {}
        for conn in self._connections.values():
            if conn.stream is None:
                continue
            since = conn.stream.unacked_since(nack_answers)
            seconds = 0.0 if since is None else now - since
            node = conn.stream.node_id
            waiting[node] = max(seconds, waiting.get(node, 0.0))
        return waiting

    def settled(self) -> bool | None:
        """True when every connected Envoy ACKed everything pushed to it (None: none connected)."""
        if not any(c.stream is not None for c in self._connections.values()):
            return None
        return not self._unsettled

    # -- the RPCs -------------------------------------------------------------------------

    async def StreamAggregatedResources(  # name fixed by the generated servicer
        self,
        request_iterator: AsyncIterator[DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        await self._run(SotwStream, request_iterator, context)

    async def DeltaAggregatedResources(  # name fixed by the generated servicer
        self,
        request_iterator: AsyncIterator[DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        await self._run(DeltaStream, request_iterator, context)

    async def _run(
        self,
        factory: type[_Stream],
        request_iterator: AsyncIterator[Message],
        context: grpc.aio.ServicerContext,
    ) -> None:
        if self._stopping:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "control plane shutting down")
        conn = _Connection(
            next(self._ids), context.peer(), time.time(), factory.protocol, unsettled=self._unsettled
        )
        if self._tls is not None:
            certs = context.auth_context().get("x509_pem_cert") or [None]
            conn.peer_cert = certs[0]
        self._connections[conn.stream_id] = conn
        reader = asyncio.create_task(self._read(request_iterator, conn.mailbox))
        try:
            await self._serve(conn, context, factory)
        except asyncio.CancelledError:
            raise  # the client went away; grpc cancels the handler
        except Exception as exc:  # a failed write means the peer is gone; log, don't crash the server
            log.info("stream_error", stream=conn.stream_id, peer=conn.peer, error=repr(exc))
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            if conn.watch is not None:
                conn.watch.close()
            del self._connections[conn.stream_id]
            node = conn.stream.node_id if conn.stream else None
            self._unsettled.discard(conn.stream_id)
            if self._metrics is not None:
                if node is not None and node not in self.connected_nodes():
                    self._metrics.node_gone(node)
                self._metrics.check_settled()  # the others may all have ACKed already
            log.info("stream_closed", stream=conn.stream_id, node=node, protocol=conn.protocol)

    async def _serve(
        self, conn: _Connection, context: grpc.aio.ServicerContext, factory: type[_Stream]
    ) -> None:
        while True:
            item = await conn.mailbox.get()
            if item is _Signal.CLOSE:
                return
            if item is _Signal.SNAPSHOT:
                conn.snapshot_pending = False
                responses = self._on_snapshot(conn)
            else:
                if conn.stream is None and not self._authorized(conn, item, context):
                    return
                responses = self._on_request(conn, item, factory)
            for resp in responses:
                await context.write(resp)
            self._settle(conn)

    def _settle(self, conn: _Connection) -> None:
        """Record whether `conn` waits for anything; the last one settling may end a write-to-ACK."""
        if conn.stream is None:
            return
        if conn.snapshot_pending or conn.stream.unacked_since(nack_answers=False) is not None:
            self._unsettled.add(conn.stream_id)
            return
        self._unsettled.discard(conn.stream_id)
        if not self._unsettled and self._metrics is not None:
            self._metrics.check_settled()

    def _authorized(self, conn: _Connection, req: Any, context: grpc.aio.ServicerContext) -> bool:
        """With TLS, the first request's node must be the one the client certificate names."""
        if self._tls is None:
            return True
        why = authorize(conn.peer_cert, req.node.cluster, req.node.id)
        if why is None:
            return True
        log.warning(
            "node_refused",
            stream=conn.stream_id,
            node=req.node.id,
            cluster=req.node.cluster,
            peer=conn.peer,
            reason=why,
        )
        # Ends the stream with this status once the handler returns; nothing was sent.
        context.set_code(grpc.StatusCode.PERMISSION_DENIED)
        context.set_details(why)
        return False

    def _on_request(self, conn: _Connection, req: Message, factory: type[_Stream]) -> list[Message]:
        if conn.stream is None:
            conn.stream = self._open(conn, req, factory)
        return conn.stream.on_request(req)

    def _on_snapshot(self, conn: _Connection) -> list[Message]:
        if conn.stream is None:
            return []
        stream = conn.stream
        return stream.on_snapshot(self._cache.snapshot_for(stream.node_id, stream.node_cluster))

    def _open(self, conn: _Connection, req: Any, factory: type[_Stream]) -> _Stream:
        node_id, cluster = req.node.id, req.node.cluster
        if not node_id:
            log.warning("stream_without_node_id", stream=conn.stream_id, peer=conn.peer)
        # Watch before reading the snapshot: any later change is then signalled to this stream.
        conn.watch = self._cache.watch(node_id, callback=conn.signal_snapshot)
        # The node's gateway group (node.cluster) decides what it receives (translate/groups.py).
        snapshot = self._cache.snapshot_for(node_id, cluster)
        stream = factory(node_id, snapshot, cluster, self._remember_nack, self._acked)
        stream.metrics = self._metrics
        if self._metrics is not None:
            self._metrics.node_seen(node_id)
        log.info(
            "stream_opened",
            stream=conn.stream_id,
            node=node_id,
            cluster=cluster,
            peer=conn.peer,
            protocol=conn.protocol,
        )
        return stream

    def _remember_nack(self, node_id: str, nack: Nack) -> None:
        self._nacks.setdefault(node_id, {})[nack.type_url] = nack
        self._nacks.move_to_end(node_id)
        while len(self._nacks) > _NACK_MEMORY:
            self._nacks.popitem(last=False)
        if self._observe_nack is not None:
            try:
                self._observe_nack(node_id, nack)
            except Exception as error:  # an observer's bug must not end the stream
                log.error("nack_observer_failed", exc_info=True, node=node_id, error=repr(error))

    def _acked(self, node_id: str, type_url: str, resources: Any) -> None:
        if self._observe_ack is not None:
            try:
                self._observe_ack(node_id, type_url, resources)
            except Exception as error:  # an observer's bug must not end the stream
                log.error("ack_observer_failed", exc_info=True, node=node_id, error=repr(error))

    @staticmethod
    async def _read(requests: AsyncIterator[Message], mailbox: asyncio.Queue[_Item]) -> None:
        try:
            async for req in requests:
                mailbox.put_nowait(req)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the peer reset the stream: same as a clean end for us
            log.debug("stream_read_ended", error=repr(exc))
        finally:
            mailbox.put_nowait(_Signal.CLOSE)
