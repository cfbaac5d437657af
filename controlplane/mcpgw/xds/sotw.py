"""State-of-the-World xDS state machine for one ADS stream, free of gRPC.

`SotwStream` turns DiscoveryRequests and snapshot changes into DiscoveryResponses. It never
does I/O, so the rules below are testable without a server; the Delta xDS variant (delta.py)
sits beside it, sharing the cache, the ACK/NACK bookkeeping (stream.py) and the gRPC plumbing
in server.py.

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
- A CDS response that changes a cluster makes the following EDS push include that cluster's
  endpoints (stream.REWARM says why).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse

from mcpgw.log import get_logger
from mcpgw.xds.cache import Resource, Snapshot, TypeResources, iter_resources, ordered_types
from mcpgw.xds.stream import REWARM, WILDCARD, Nack, NackHook, StreamBase, TypeStatus, iso, short_name
from mcpgw.xds.types import WILDCARD_TYPES

log = get_logger(__name__)

__all__ = ["Nack", "NackHook", "SotwStream", "TypeState", "iso", "short_name"]


@dataclass(slots=True)
class TypeState(TypeStatus):
    """What one SotW stream knows about one resource type."""

    full_state: bool = False  # Listener/Cluster: every response carries every subscribed resource
    # name -> hash of what Envoy was last sent (full-state types: exactly the last response).
    sent: dict[str, str] = field(default_factory=dict)
    last_sent_names: frozenset[str] = frozenset()
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


class SotwStream(StreamBase[DiscoveryRequest, DiscoveryResponse, TypeState]):
    """Protocol state of one SotW ADS stream (one Envoy connection)."""

    protocol = "sotw"

    # -- inputs ---------------------------------------------------------------------------

    def on_request(self, req: DiscoveryRequest) -> list[DiscoveryResponse]:
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
            self._record_nack_of(ts, req)
        else:
            self._record_ack_of(ts, req)
        ts.update_subscription(req.resource_names)
        return self._with_rewarmed(ts, self._diff_response(ts, tr))

    def on_snapshot(self, snapshot: Snapshot) -> list[DiscoveryResponse]:
        self.snapshot = snapshot
        responses = []
        for type_url in ordered_types(self.types):
            resp = self._diff_response(self.types[type_url], snapshot.get(type_url))
            if resp is not None:
                responses.append(resp)
        return responses

    # -- ACK / NACK -----------------------------------------------------------------------

    def _record_ack_of(self, ts: TypeState, req: DiscoveryRequest) -> None:
        if ts.acked_nonce != req.response_nonce:
            ts.retry = frozenset()
        self._record_ack(ts, req.version_info, req.response_nonce, _last_response(ts))

    def _record_nack_of(self, ts: TypeState, req: DiscoveryRequest) -> None:
        version = ts.version_sent or ""
        error = req.error_detail.message
        if self._record_nack(ts, version, req.version_info, req.response_nonce, error, _last_response(ts)):
            ts.retry = ts.last_sent_names if not ts.full_state else frozenset()

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
        resources = list(iter_resources(tr, names))
        resp = DiscoveryResponse(
            version_info=tr.version,
            type_url=ts.type_url,
            nonce=self._next_nonce(),
            resources=[r.packed for r in resources],
        )
        hashes = {r.name: r.hash for r in resources}
        if ts.full_state:
            self._rewarm(ts, [r for r in resources if ts.sent.get(r.name) != r.hash])
            ts.sent = hashes
        else:
            ts.sent.update(hashes)
        ts.pushed(tr.version, resp.nonce)
        ts.last_sent_names = frozenset(hashes)
        self._log_push(ts, tr.version, resp.nonce, len(resources))
        return resp

    def _rewarm(self, ts: TypeState, changed: list[Resource]) -> None:
        """Forget what the child type sent for changed parents, so the next diff resends it."""
        rule = REWARM.get(ts.type_url)
        child = self.types.get(rule[0]) if rule else None
        if rule is None or child is None or not changed:
            return
        for res in changed:
            for name in rule[1](res.message):
                child.sent.pop(name, None)


def _last_response(ts: TypeState) -> dict[str, str]:
    """Name -> hash of each resource in the latest response (the one an ACK or NACK answers:
    requests echoing an older nonce are ignored as stale)."""
    return {name: ts.sent[name] for name in ts.last_sent_names if name in ts.sent}
