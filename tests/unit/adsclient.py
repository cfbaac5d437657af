"""Small asyncio ADS clients that behave like Envoy, for tests and benchmarks.

`AdsClient` speaks State of the World (StreamAggregatedResources), `DeltaAdsClient` speaks
incremental xDS (DeltaAggregatedResources). Like Envoy each remembers, per type, what it
accepted, the latest nonce and the subscribed names, so `ack()` / `nack()` / `subscribe()`
build the request Envoy would send. Raw `send()` exists for requests Envoy would not send.

    async with AdsClient(f"127.0.0.1:{port}", "node-1") as client:
        await client.subscribe(CLUSTER)
        resp = await client.recv()
        await client.ack(resp)

    async with DeltaAdsClient(f"127.0.0.1:{port}", "node-1") as client:
        await client.subscribe(CLUSTER)              # legacy wildcard: no names at all
        resp = await client.recv()                   # a DeltaDiscoveryResponse
        await client.ack(resp)                       # client.tracking[CLUSTER].versions updated
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, extension_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    DiscoveryRequest,
    DiscoveryResponse,
)
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
        secret_pb2.Secret,
    )
}


def resource_name(message: Message) -> str:
    """The xDS name of a resource (ClusterLoadAssignment calls it cluster_name)."""
    if isinstance(message, endpoint_pb2.ClusterLoadAssignment):
        return message.cluster_name
    return str(getattr(message, "name"))  # noqa: B009 - every other served type has `name`


def decode(resp: DiscoveryResponse | DeltaDiscoveryResponse) -> dict[str, Message]:
    """Unpack a response's resources (SotW or Delta), keyed by resource name."""
    out: dict[str, Message] = {}
    for item in resp.resources:
        packed = item.resource if isinstance(resp, DeltaDiscoveryResponse) else item
        message = MESSAGE_CLASSES[packed.type_url]()
        packed.Unpack(message)
        out[resource_name(message)] = message
    return out


def names_of(resp: DiscoveryResponse | DeltaDiscoveryResponse) -> list[str]:
    return sorted(decode(resp))


def describe(resp: DiscoveryResponse | DeltaDiscoveryResponse) -> str:
    """One line naming a response, for assertion messages."""
    if isinstance(resp, DeltaDiscoveryResponse):
        removed = f" removed={sorted(resp.removed_resources)}" if resp.removed_resources else ""
        return f"{resp.type_url} v{resp.system_version_info} {names_of(resp)}{removed}"
    return f"{resp.type_url} v{resp.version_info} {names_of(resp)}"


Response = TypeVar("Response", DiscoveryResponse, DeltaDiscoveryResponse)


class _StreamClient(Generic[Response]):
    """One ADS stream acting as node `node_id`: connection, node handling and receiving."""

    def __init__(
        self,
        target: str,
        node_id: str,
        cluster: str = "mcpgw-test",
        *,
        node_on_every_request: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
    ) -> None:
        self.target = target
        # With `credentials`, a TLS channel; `server_name` overrides the name the server's
        # certificate is checked against (the target's host otherwise).
        self._credentials = credentials
        self._channel_options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        self.node = base_pb2.Node(id=node_id, cluster=cluster)
        self._node_on_every_request = node_on_every_request
        self._sent_node = False
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.StreamStreamCall | None = None
        self._responses: asyncio.Queue[Response | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        # grpc.aio allows one write in flight per call; an ACK loop and a subscriber may overlap.
        self._write_lock = asyncio.Lock()
        self.closed_with: grpc.StatusCode | None = None  # set when the server ends the stream

    # -- lifecycle ------------------------------------------------------------------------

    def _open(self, stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub) -> grpc.aio.StreamStreamCall:
        raise NotImplementedError

    async def connect(self) -> None:
        if self._credentials is not None:
            self._channel = grpc.aio.secure_channel(self.target, self._credentials, self._channel_options)
        else:
            self._channel = grpc.aio.insecure_channel(self.target)
        self._call = self._open(ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel))
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

    async def __aenter__(self) -> Self:
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

    async def _write(self, req: Any, error: str | None) -> None:
        """Send `req`, with the node on the first request (or every one) and an optional NACK reason."""
        assert self._call is not None, "connect() first"
        if not self._sent_node or self._node_on_every_request:
            req.node.CopyFrom(self.node)
            self._sent_node = True
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))  # INVALID_ARGUMENT
        async with self._write_lock:
            await self._call.write(req)

    async def ack(self, resp: Response) -> None:
        raise NotImplementedError

    # -- receiving ------------------------------------------------------------------------

    async def recv(self, timeout: float = 5.0) -> Response:
        """The next response; raises TimeoutError, or EOFError if the stream ended."""
        resp = await asyncio.wait_for(self._responses.get(), timeout)
        if resp is None:
            self._responses.put_nowait(None)  # keep reporting the end to later callers
            raise EOFError(f"ADS stream ended: {self.closed_with}")
        return resp

    async def recv_many(self, count: int, timeout: float = 5.0) -> list[Response]:
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
        raise AssertionError(f"unexpected response {describe(resp)}")

    async def ack_until_quiet(self, quiet: float = 0.3, limit: int = 1000) -> list[Response]:
        """Receive and ACK everything until the server has nothing more to say (bounded)."""
        received: list[Response] = []
        for _ in range(limit):
            try:
                resp = await self.recv(quiet)
            except TimeoutError:
                return received
            received.append(resp)
            await self.ack(resp)
        raise AssertionError(f"server still pushing after {limit} responses")


@dataclass(slots=True)
class TypeTracking:
    """SotW, Envoy-side view of one type: what it accepted, the last nonce, what it subscribes to."""

    version: str = ""
    nonce: str = ""
    names: list[str] = field(default_factory=list)


class AdsClient(_StreamClient[DiscoveryResponse]):
    """One State-of-the-World ADS stream to a control plane, acting as node `node_id`."""

    def __init__(self, target: str, node_id: str, cluster: str = "mcpgw-test", **options: Any) -> None:
        super().__init__(target, node_id, cluster, **options)
        self.tracking: dict[str, TypeTracking] = {}

    def _open(self, stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub) -> grpc.aio.StreamStreamCall:
        return stub.StreamAggregatedResources()

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
        req = DiscoveryRequest(
            type_url=type_url, resource_names=list(names), version_info=version, response_nonce=nonce
        )
        await self._write(req, error)

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


@dataclass(slots=True)
class DeltaTracking:
    """Delta, Envoy-side view of one type: the resources it accepted and what it subscribes to.

    `versions` outlives a stream, as in Envoy: pass it to a new client to resume with
    `initial_resource_versions`.
    """

    versions: dict[str, str] = field(default_factory=dict)  # accepted resource -> its version
    names: set[str] = field(default_factory=set)  # explicitly subscribed names, without "*"
    wildcard: bool = False
    nonce: str = ""  # the last response received


class DeltaAdsClient(_StreamClient[DeltaDiscoveryResponse]):
    """One Delta (incremental) ADS stream to a control plane, acting as node `node_id`."""

    def __init__(
        self,
        target: str,
        node_id: str,
        cluster: str = "mcpgw-test",
        *,
        tracking: Mapping[str, DeltaTracking] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(target, node_id, cluster, **options)
        # A copy: a resumed client must not change what the earlier one recorded.
        self.tracking: dict[str, DeltaTracking] = copy.deepcopy(dict(tracking or {}))
        self._requested: set[str] = set()  # types already requested on this stream

    def _open(self, stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub) -> grpc.aio.StreamStreamCall:
        return stub.DeltaAggregatedResources()

    async def send(
        self,
        type_url: str,
        subscribe: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        *,
        nonce: str = "",
        error: str | None = None,
        initial: Mapping[str, str] | None = None,
    ) -> None:
        """Send one raw DeltaDiscoveryRequest (no tracking is updated)."""
        req = DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            initial_resource_versions=dict(initial or {}),
            response_nonce=nonce,
        )
        self._requested.add(type_url)
        await self._write(req, error)

    async def subscribe(self, type_url: str, names: Sequence[str] = ()) -> None:
        """Add `names` ("*" for wildcard); no names on a type's first request is the legacy wildcard.

        The first request for a type on this stream carries the versions held from an
        earlier stream, as Envoy's does after a reconnect.
        """
        first = type_url not in self._requested
        track = self.tracking.setdefault(type_url, DeltaTracking())
        if "*" in names or (first and not names and not track.names):
            track.wildcard = True
        track.names |= set(names) - {"*"}
        initial = track.versions if first else None
        await self.send(type_url, names, nonce="", initial=initial)

    async def unsubscribe(self, type_url: str, names: Sequence[str]) -> None:
        track = self.tracking.setdefault(type_url, DeltaTracking())
        if "*" in names:
            track.wildcard = False
        track.names -= set(names)
        for name in names:
            track.versions.pop(name, None)
        await self.send(type_url, (), names)

    async def resume(self) -> None:
        """On a new stream, re-state every tracked subscription with the versions held."""
        for type_url, track in self.tracking.items():
            names = sorted(track.names) + (["*"] if track.wildcard and track.names else [])
            await self.subscribe(type_url, names)

    async def ack(self, resp: DeltaDiscoveryResponse) -> None:
        """Accept `resp`: keep its resources' versions, drop what it removed, echo the nonce."""
        track = self.tracking.setdefault(resp.type_url, DeltaTracking())
        for res in resp.resources:
            track.versions[res.name] = res.version
        for name in resp.removed_resources:
            track.versions.pop(name, None)
        track.nonce = resp.nonce
        await self.send(resp.type_url, nonce=resp.nonce)

    async def nack(self, resp: DeltaDiscoveryResponse, message: str) -> None:
        """Reject `resp`: versions stay as they were, the nonce is echoed with the reason."""
        track = self.tracking.setdefault(resp.type_url, DeltaTracking())
        track.nonce = resp.nonce
        await self.send(resp.type_url, nonce=resp.nonce, error=message)
