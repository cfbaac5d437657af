"""A small asyncio ADS (State of the World) client that behaves like Envoy, for tests and benchmarks.

Like Envoy it remembers, per type, the last accepted version, the latest nonce and the
subscribed names, so `ack()` / `nack()` / `subscribe()` build the request Envoy would send.
Raw `send()` exists for requests Envoy would not send (stale nonces, odd versions).

    async with AdsClient(f"127.0.0.1:{port}", "node-1") as client:
        await client.subscribe(CLUSTER)
        resp = await client.recv()
        await client.ack(resp)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, extension_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
from google.protobuf.message import Message
from google.rpc import status_pb2

_TYPE_PREFIX = "type.googleapis.com/"
MESSAGE_CLASSES: dict[str, type[Message]] = {
    _TYPE_PREFIX + cls.DESCRIPTOR.full_name: cls
    for cls in (
        cluster_pb2.Cluster,
        endpoint_pb2.ClusterLoadAssignment,
        extension_pb2.TypedExtensionConfig,
        listener_pb2.Listener,
        route_pb2.RouteConfiguration,
    )
}


def resource_name(message: Message) -> str:
    """The xDS name of a resource (ClusterLoadAssignment calls it cluster_name)."""
    if isinstance(message, endpoint_pb2.ClusterLoadAssignment):
        return message.cluster_name
    return str(getattr(message, "name"))  # noqa: B009 - every other served type has `name`


def decode(resp: DiscoveryResponse) -> dict[str, Message]:
    """Unpack a response's resources, keyed by resource name."""
    out: dict[str, Message] = {}
    for packed in resp.resources:
        message = MESSAGE_CLASSES[packed.type_url]()
        packed.Unpack(message)
        out[resource_name(message)] = message
    return out


def names_of(resp: DiscoveryResponse) -> list[str]:
    return sorted(decode(resp))


@dataclass(slots=True)
class TypeTracking:
    """Envoy-side view of one type: what it accepted, the last nonce, what it subscribes to."""

    version: str = ""
    nonce: str = ""
    names: list[str] = field(default_factory=list)


class AdsClient:
    """One ADS stream to a control plane, acting as node `node_id`."""

    def __init__(
        self,
        target: str,
        node_id: str,
        cluster: str = "mcpgw-test",
        *,
        node_on_every_request: bool = False,
    ) -> None:
        self.target = target
        self.node = base_pb2.Node(id=node_id, cluster=cluster)
        self.tracking: dict[str, TypeTracking] = {}
        self._node_on_every_request = node_on_every_request
        self._sent_node = False
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.StreamStreamCall | None = None
        self._responses: asyncio.Queue[DiscoveryResponse | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self.closed_with: grpc.StatusCode | None = None  # set when the server ends the stream

    # -- lifecycle ------------------------------------------------------------------------

    async def connect(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.target)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
        self._call = stub.StreamAggregatedResources()
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._channel is not None:
            await self._channel.close()
        self._call = self._channel = self._reader = None

    async def __aenter__(self) -> AdsClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _read(self) -> None:
        assert self._call is not None
        try:
            while True:
                resp = await self._call.read()
                if resp is grpc.aio.EOF:
                    break
                self._responses.put_nowait(resp)
        except grpc.aio.AioRpcError as err:
            self.closed_with = err.code()
        finally:
            self._responses.put_nowait(None)  # wakes a waiting recv(): the stream ended
        if self.closed_with is None:
            self.closed_with = (await self._call.code()) if self._call else None

    # -- sending --------------------------------------------------------------------------

    async def send(
        self,
        type_url: str,
        names: Iterable[str] = (),
        *,
        version: str = "",
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        """Send one raw DiscoveryRequest (no tracking is updated)."""
        assert self._call is not None, "connect() first"
        req = DiscoveryRequest(
            type_url=type_url, resource_names=list(names), version_info=version, response_nonce=nonce
        )
        if not self._sent_node or self._node_on_every_request:
            req.node.CopyFrom(self.node)
            self._sent_node = True
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))  # INVALID_ARGUMENT
        await self._call.write(req)

    async def subscribe(self, type_url: str, names: Sequence[str] = ()) -> None:
        """(Re)state the subscription for a type, with the tracked version and nonce."""
        track = self.tracking.setdefault(type_url, TypeTracking())
        track.names = list(names)
        await self.send(type_url, track.names, version=track.version, nonce=track.nonce)

    async def ack(self, resp: DiscoveryResponse, names: Sequence[str] | None = None) -> None:
        """Accept `resp`; `names` optionally changes the subscription in the same request."""
        track = self.tracking.setdefault(resp.type_url, TypeTracking())
        track.version, track.nonce = resp.version_info, resp.nonce
        if names is not None:
            track.names = list(names)
        await self.send(resp.type_url, track.names, version=track.version, nonce=track.nonce)

    async def nack(self, resp: DiscoveryResponse, message: str) -> None:
        """Reject `resp`: keep the previous version, echo the nonce, explain why."""
        track = self.tracking.setdefault(resp.type_url, TypeTracking())
        track.nonce = resp.nonce
        await self.send(resp.type_url, track.names, version=track.version, nonce=track.nonce, error=message)

    # -- receiving ------------------------------------------------------------------------

    async def recv(self, timeout: float = 5.0) -> DiscoveryResponse:
        """The next response; raises TimeoutError, or EOFError if the stream ended."""
        resp = await asyncio.wait_for(self._responses.get(), timeout)
        if resp is None:
            self._responses.put_nowait(None)  # keep reporting the end to later callers
            raise EOFError(f"ADS stream ended: {self.closed_with}")
        return resp

    async def recv_many(self, count: int, timeout: float = 5.0) -> list[DiscoveryResponse]:
        return [await self.recv(timeout) for _ in range(count)]

    async def expect_silence(self, quiet: float = 0.3) -> None:
        """Assert that no response arrives within `quiet` seconds."""
        try:
            resp = await asyncio.wait_for(self._responses.get(), quiet)
        except TimeoutError:
            return
        if resp is None:
            self._responses.put_nowait(None)
            return
        raise AssertionError(f"unexpected response {resp.type_url} v{resp.version_info} {names_of(resp)}")

    async def ack_until_quiet(self, quiet: float = 0.3, limit: int = 1000) -> list[DiscoveryResponse]:
        """Receive and ACK everything until the server has nothing more to say (bounded)."""
        received: list[DiscoveryResponse] = []
        for _ in range(limit):
            try:
                resp = await self.recv(quiet)
            except TimeoutError:
                return received
            received.append(resp)
            await self.ack(resp)
        raise AssertionError(f"server still pushing after {limit} responses")
