"""What SotW and Delta xDS streams share: ACK/NACK bookkeeping, status, nonces, re-warm rule.

Both protocols record the same facts per type (what version went out with which nonce, what
Envoy ACKed, its last NACK) and report them through the same `status()`, so an operator reads
one format whichever `api_type` a node's bootstrap chose. The per-protocol rules live in
sotw.py and delta.py; nothing here does I/O or knows about gRPC.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from google.protobuf.message import Message

from mcpgw.log import get_logger
from mcpgw.xds.cache import Snapshot, TypeResources, ordered_types
from mcpgw.xds.types import CLUSTER, ENDPOINT, SHORT_NAMES

log = get_logger(__name__)

WILDCARD = "*"


def short_name(type_url: str) -> str:
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
    return f"{stamp}.{int(ts * 1000) % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Nack:
    """A rejected response: our version, the version Envoy kept, and why."""

    type_url: str
    version: str  # the version we sent and Envoy rejected
    client_version: str  # the version Envoy still runs
    nonce: str
    error: str
    at: float
    # name -> content hash of every resource in the rejected response: which of them Envoy
    # refused is for observers to work out (its error usually names the one).
    resources: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "client_version": self.client_version,
            "nonce": self.nonce,
            "error": self.error,
            "at": iso(self.at),
        }


class StreamMetrics(Protocol):
    """What a stream reports for metrics (`mcpgw.metrics.ControlPlaneMetrics`): (node id, type URL)."""

    def pushed(self, node: str, type_url: str) -> None: ...
    def acked(self, node: str, type_url: str) -> None: ...
    def nacked(self, node: str, type_url: str) -> None: ...


NackHook = Callable[[str, Nack], None]
# (node id, type URL, name -> content hash of each resource in the response Envoy accepted)
AckHook = Callable[[str, str, Mapping[str, str]], None]


@dataclass(slots=True)
class TypeStatus:
    """What one stream knows about one resource type, in either protocol."""

    type_url: str
    wildcard: bool = False
    explicit: bool = False  # the client has named resources: "no names" no longer means "*"
    names: frozenset[str] = frozenset()
    version_sent: str | None = None
    nonce: str | None = None
    last_push_at: float | None = None
    version_acked: str | None = None
    acked_nonce: str | None = None
    acked_at: float | None = None
    last_nack: Nack | None = None

    def pushed(self, version: str, nonce: str) -> None:
        self.version_sent, self.nonce, self.last_push_at = version, nonce, time.time()

    def to_dict(self) -> dict[str, Any]:
        return {
            "version_sent": self.version_sent,
            "nonce": self.nonce,
            "last_push_at": iso(self.last_push_at),
            "version_acked": self.version_acked,
            "acked_at": iso(self.acked_at),
            "last_nack": self.last_nack.to_dict() if self.last_nack else None,
            "wildcard": self.wildcard,
            "subscribed": len(self.names),
        }


def _eds_names(cluster: Message) -> list[str]:
    """The EDS resource an EDS cluster warms on (service_name, else the cluster's name)."""
    assert isinstance(cluster, Cluster)
    if cluster.WhichOneof("cluster_discovery_type") != "type" or cluster.type != Cluster.EDS:
        return []
    return [cluster.eds_cluster_config.service_name or cluster.name]


# A cluster Envoy adds or modifies warms only when it receives a ClusterLoadAssignment, even an
# unchanged one (verified with Envoy 1.40: without it the cluster stays warming until the initial
# fetch timeout). So a response that changes a parent makes the child type resend these names.
# parent type -> (child type, child names a changed parent re-warms on)
REWARM: Mapping[str, tuple[str, Callable[[Message], list[str]]]] = {CLUSTER: (ENDPOINT, _eds_names)}

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
State = TypeVar("State", bound=TypeStatus)


class StreamBase(Generic[Req, Resp, State]):
    """Protocol state of one ADS stream (one Envoy connection); subclasses add the rules."""

    protocol: ClassVar[str]

    def __init__(
        self,
        node_id: str,
        snapshot: Snapshot,
        node_cluster: str = "",
        on_nack: NackHook | None = None,
        on_ack: AckHook | None = None,
    ) -> None:
        self.node_id = node_id
        self.node_cluster = node_cluster
        # Requests are answered from the snapshot this stream last synced to, never a newer one:
        # a newer snapshot goes out through on_snapshot, all changed types in PUSH_ORDER, so
        # an ACK racing a snapshot change cannot push, say, routes ahead of their clusters.
        self.snapshot = snapshot
        self.types: dict[str, State] = {}
        self._nonce = 0
        self._on_nack = on_nack
        self._on_ack = on_ack
        # Counts pushes, ACKs and NACKs (`mcpgw.metrics`); set by the server after creation.
        self.metrics: StreamMetrics | None = None

    def on_request(self, req: Req) -> list[Resp]:
        """Handle one request; returns the responses to send, usually 0 or 1."""
        raise NotImplementedError

    def on_snapshot(self, snapshot: Snapshot) -> list[Resp]:
        """Sync to `snapshot`: responses for every subscribed type it changed, in push order."""
        raise NotImplementedError

    def _diff_response(self, ts: State, tr: TypeResources) -> Resp | None:
        """The response that brings the client up to `tr` for `ts`'s type, or None."""
        raise NotImplementedError

    def _with_rewarmed(self, ts: State, resp: Resp | None) -> list[Resp]:
        """`resp`, followed by the child response a changed parent needs (CDS -> EDS)."""
        if resp is None:
            return []
        rule = REWARM.get(ts.type_url)
        child = self.types.get(rule[0]) if rule else None
        extra = self._diff_response(child, self.snapshot.get(child.type_url)) if child else None
        return [resp] if extra is None else [resp, extra]

    def _next_nonce(self) -> str:
        # One counter for all types: a nonce names one response on the whole stream.
        self._nonce += 1
        return str(self._nonce)

    # -- ACK / NACK -----------------------------------------------------------------------

    def _record_ack(
        self, ts: State, version: str, nonce: str, resources: Mapping[str, str] | None = None
    ) -> None:
        if ts.acked_nonce == nonce:
            return  # a later request re-sent with the same nonce only updates names
        ts.version_acked, ts.acked_nonce, ts.acked_at = version, nonce, time.time()
        log.debug("ack", node=self.node_id, type=short_name(ts.type_url), version=version)
        if self.metrics is not None:
            self.metrics.acked(self.node_id, ts.type_url)
        if self._on_ack is not None and resources:
            self._on_ack(self.node_id, ts.type_url, resources)

    def _record_nack(
        self,
        ts: State,
        version: str,
        client_version: str,
        nonce: str,
        error: str,
        resources: Mapping[str, str] | None = None,
    ) -> bool:
        """Record a rejection of the response `nonce`; False if it was already recorded."""
        if ts.last_nack is not None and ts.last_nack.nonce == nonce:
            return False  # the same rejection repeated alongside a subscription change
        nack = Nack(
            type_url=ts.type_url,
            version=version,
            client_version=client_version,
            nonce=nonce,
            error=error,
            at=time.time(),
            resources=dict(resources or {}),
        )
        ts.last_nack = nack
        log.warning(
            "nack",
            node=self.node_id,
            type=short_name(ts.type_url),
            version=version,
            client_version=client_version,
            error=error,
            protocol=self.protocol,
        )
        if self.metrics is not None:
            self.metrics.nacked(self.node_id, ts.type_url)
        if self._on_nack is not None:
            self._on_nack(self.node_id, nack)
        return True

    def _log_push(self, ts: State, version: str, nonce: str, resources: int, removed: int = 0) -> None:
        if self.metrics is not None:
            self.metrics.pushed(self.node_id, ts.type_url)
        log.info(
            "push",
            node=self.node_id,
            type=short_name(ts.type_url),
            version=version,
            nonce=nonce,
            resources=resources,
            removed=removed,
            protocol=self.protocol,
        )

    # -- introspection --------------------------------------------------------------------

    def unacked_since(self, nack_answers: bool = True) -> float | None:
        """When the oldest push Envoy has not ACKed yet went out (None: all ACKed).

        With `nack_answers`, a NACKed push counts as answered (the NACK has its own counter
        and alert); without it only an ACK does.
        """
        waiting = [
            ts.last_push_at
            for ts in self.types.values()
            if ts.nonce is not None
            and ts.last_push_at is not None
            and ts.acked_nonce != ts.nonce
            and not (nack_answers and ts.last_nack is not None and ts.last_nack.nonce == ts.nonce)
        ]
        return min(waiting, default=None)

    def type_status(self) -> Mapping[str, dict[str, Any]]:
        return {short_name(url): self.types[url].to_dict() for url in ordered_types(self.types)}
