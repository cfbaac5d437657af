"""State-of-the-World xDS state machine for one ADS stream, free of gRPC.

`SotwStream` turns DiscoveryRequests and snapshot changes into DiscoveryResponses. It never
does I/O, so the rules below are testable without a server and a Delta xDS variant can sit
beside it later, sharing the cache and the gRPC plumbing in server.py.

Rules (envoy docs/root/api-docs/xds_protocol.rst):
- The first request for a type on a stream is always answered, even if its version_info
  already equals ours: Envoy reconnecting to a fresh replica needs a response to finish warming.
- After that, a request whose response_nonce is not the latest nonce sent for its type is
  stale and ignored; Envoy will repeat its subscription with the newer nonce.
- A request with error_detail is a NACK: recorded, and the rejected content is not sent again
  until the snapshot changes it. A request without it is an ACK.
- Listener and Cluster responses carry every subscribed resource (that is how deletions reach
  Envoy); other types carry only the subscribed resources whose content differs from what this
  stream last sent, so editing one tool resends one extension config.
- A cluster Envoy adds or modifies warms only when it receives a ClusterLoadAssignment, even an
  unchanged one (verified with Envoy 1.40: without it the cluster stays warming until the
  initial fetch timeout). So a CDS response that changes a cluster makes the following EDS
  push include that cluster's endpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
from google.protobuf.message import Message

from mcpgw.log import get_logger
from mcpgw.xds.cache import Resource, Snapshot, TypeResources, iter_resources, ordered_types
from mcpgw.xds.types import CLUSTER, ENDPOINT, SHORT_NAMES, WILDCARD_TYPES

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "client_version": self.client_version,
            "nonce": self.nonce,
            "error": self.error,
            "at": iso(self.at),
        }


@dataclass(slots=True)
class TypeState:
    """What one stream knows about one resource type."""

    type_url: str
    full_state: bool  # Listener/Cluster: every response carries every subscribed resource
    wildcard: bool = False
    explicit: bool = False  # the client has named resources; empty names now mean "none"
    names: frozenset[str] = frozenset()
    version_sent: str | None = None
    nonce: str | None = None
    last_push_at: float | None = None
    # name -> hash of what Envoy was last sent (full-state types: exactly the last response).
    sent: dict[str, str] = field(default_factory=dict)
    last_sent_names: frozenset[str] = frozenset()
    version_acked: str | None = None
    acked_nonce: str | None = None
    acked_at: float | None = None
    last_nack: Nack | None = None
    # Names in a NACKed response: Envoy may have applied some and dropped others, so resend
    # them with the next change of this type (never at the version it rejected).
    retry: frozenset[str] = frozenset()

    def update_subscription(self, names: Iterable[str]) -> bool:
        """Apply the names of a request; True if the subscription changed."""
        requested = frozenset(names)
        wildcard = self.wildcard
        if self.full_state:
            # Legacy rule: empty names mean "*" until the client names something explicitly.
            wildcard = WILDCARD in requested or (not requested and not self.explicit)
        self.explicit = self.explicit or bool(requested)
        requested = requested - {WILDCARD}
        changed = wildcard != self.wildcard or requested != self.names
        self.wildcard, self.names = wildcard, requested
        if changed and not self.full_state:
            # Forget what we sent for dropped names so a later re-subscription gets them again.
            self.sent = {n: h for n, h in self.sent.items() if n in requested}
        return changed

    def wanted(self, tr: TypeResources) -> list[str]:
        """Subscribed names present in the snapshot (absent ones are simply not sent)."""
        if self.wildcard:
            return sorted(tr.resources)
        return sorted(n for n in self.names if n in tr.resources)

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


NackHook = Callable[[str, Nack], None]


def _eds_names(cluster: Message) -> list[str]:
    """The EDS resource an EDS cluster warms on (service_name, else the cluster's name)."""
    assert isinstance(cluster, Cluster)
    if cluster.WhichOneof("cluster_discovery_type") != "type" or cluster.type != Cluster.EDS:
        return []
    return [cluster.eds_cluster_config.service_name or cluster.name]


# parent type -> (child type, child names a changed parent re-warms on)
_REWARM: dict[str, tuple[str, Callable[[Message], list[str]]]] = {CLUSTER: (ENDPOINT, _eds_names)}


class SotwStream:
    """Protocol state of one ADS stream (one Envoy connection)."""

    def __init__(
        self,
        node_id: str,
        snapshot: Snapshot,
        node_cluster: str = "",
        on_nack: NackHook | None = None,
    ) -> None:
        self.node_id = node_id
        self.node_cluster = node_cluster
        # Requests are answered from the snapshot this stream last synced to, never a newer one:
        # a newer snapshot goes out through on_snapshot, all changed types in PUSH_ORDER, so
        # an ACK racing a snapshot change cannot push, say, routes ahead of their clusters.
        self.snapshot = snapshot
        self.types: dict[str, TypeState] = {}
        self._nonce = 0
        self._on_nack = on_nack

    # -- inputs ---------------------------------------------------------------------------

    def on_request(self, req: DiscoveryRequest) -> list[DiscoveryResponse]:
        """Handle one request; returns the responses to send, usually 0 or 1."""
        if not req.type_url:
            log.warning("request_without_type", node=self.node_id)
            return []
        tr = self.snapshot.get(req.type_url)
        ts = self.types.get(req.type_url)
        if ts is None:
            ts = TypeState(req.type_url, full_state=req.type_url in WILDCARD_TYPES)
            self.types[req.type_url] = ts
            ts.update_subscription(req.resource_names)
            return self._with_rewarmed(ts, self._respond(ts, tr, ts.wanted(tr)))
        if req.response_nonce != ts.nonce:
            log.debug(
                "stale_request",
                node=self.node_id,
                type=short_name(ts.type_url),
                nonce=req.response_nonce,
                latest=ts.nonce,
            )
            return []
        if req.HasField("error_detail"):
            self._record_nack(ts, req)
        else:
            self._record_ack(ts, req)
        ts.update_subscription(req.resource_names)
        return self._with_rewarmed(ts, self._diff_response(ts, tr))

    def _with_rewarmed(self, ts: TypeState, resp: DiscoveryResponse | None) -> list[DiscoveryResponse]:
        """`resp`, followed by the child response a changed parent needs (CDS -> EDS)."""
        if resp is None:
            return []
        rule = _REWARM.get(ts.type_url)
        child = self.types.get(rule[0]) if rule else None
        extra = self._diff_response(child, self.snapshot.get(child.type_url)) if child else None
        return [resp] if extra is None else [resp, extra]

    def on_snapshot(self, snapshot: Snapshot) -> list[DiscoveryResponse]:
        """Sync to `snapshot`: responses for every subscribed type it changed, in push order."""
        self.snapshot = snapshot
        responses = []
        for type_url in ordered_types(self.types):
            resp = self._diff_response(self.types[type_url], snapshot.get(type_url))
            if resp is not None:
                responses.append(resp)
        return responses

    # -- ACK / NACK -----------------------------------------------------------------------

    def _record_ack(self, ts: TypeState, req: DiscoveryRequest) -> None:
        if ts.acked_nonce == req.response_nonce:
            return  # a later request re-sent with the same nonce only updates names
        ts.version_acked, ts.acked_nonce, ts.acked_at = req.version_info, req.response_nonce, time.time()
        ts.retry = frozenset()
        log.debug("ack", node=self.node_id, type=short_name(ts.type_url), version=req.version_info)

    def _record_nack(self, ts: TypeState, req: DiscoveryRequest) -> None:
        if ts.last_nack is not None and ts.last_nack.nonce == req.response_nonce:
            return  # the same rejection repeated alongside a subscription change
        nack = Nack(
            type_url=ts.type_url,
            version=ts.version_sent or "",
            client_version=req.version_info,
            nonce=req.response_nonce,
            error=req.error_detail.message,
            at=time.time(),
        )
        ts.last_nack = nack
        ts.retry = ts.last_sent_names if not ts.full_state else frozenset()
        log.warning(
            "nack",
            node=self.node_id,
            type=short_name(ts.type_url),
            version=nack.version,
            client_version=nack.client_version,
            error=nack.error,
        )
        if self._on_nack is not None:
            self._on_nack(self.node_id, nack)

    # -- responses ------------------------------------------------------------------------

    def _diff_response(self, ts: TypeState, tr: TypeResources) -> DiscoveryResponse | None:
        """The response that brings Envoy up to `tr`, or None if it already has it."""
        wanted = ts.wanted(tr)
        if ts.full_state:
            if {n: tr.resources[n].hash for n in wanted} == ts.sent:
                return None
            return self._respond(ts, tr, wanted)
        changed = [n for n in wanted if ts.sent.get(n) != tr.resources[n].hash]
        if not changed:
            return None
        if ts.retry and (ts.last_nack is None or ts.last_nack.version != tr.version):
            changed = sorted(set(changed) | (ts.retry & set(wanted)))
        return self._respond(ts, tr, changed)

    def _respond(self, ts: TypeState, tr: TypeResources, names: list[str]) -> DiscoveryResponse:
        self._nonce += 1
        resources = list(iter_resources(tr, names))
        resp = DiscoveryResponse(
            version_info=tr.version,
            type_url=ts.type_url,
            nonce=str(self._nonce),
            resources=[r.packed for r in resources],
        )
        hashes = {r.name: r.hash for r in resources}
        if ts.full_state:
            self._rewarm(ts, [r for r in resources if ts.sent.get(r.name) != r.hash])
            ts.sent = hashes
        else:
            ts.sent.update(hashes)
        ts.version_sent, ts.nonce, ts.last_push_at = tr.version, resp.nonce, time.time()
        ts.last_sent_names = frozenset(hashes)
        log.info(
            "push",
            node=self.node_id,
            type=short_name(ts.type_url),
            version=tr.version,
            nonce=resp.nonce,
            resources=len(resources),
        )
        return resp

    def _rewarm(self, ts: TypeState, changed: list[Resource]) -> None:
        """Forget what the child type sent for changed parents, so the next diff resends it."""
        rule = _REWARM.get(ts.type_url)
        child = self.types.get(rule[0]) if rule else None
        if rule is None or child is None or not changed:
            return
        for res in changed:
            for name in rule[1](res.message):
                child.sent.pop(name, None)

    # -- introspection --------------------------------------------------------------------

    def type_status(self) -> Mapping[str, dict[str, Any]]:
        return {short_name(url): self.types[url].to_dict() for url in ordered_types(self.types)}
