"""Delta (incremental) xDS state machine for one ADS stream, free of gRPC.

`DeltaStream` turns DeltaDiscoveryRequests and snapshot changes into DeltaDiscoveryResponses,
beside `SotwStream` (sotw.py): same cache, same ACK/NACK records and status (stream.py), same
push order. What differs is what goes on the wire: per-resource versions (the cache's content
hashes), so a response carries only the resources that changed, and deletions are explicit.

Rules (envoy docs/root/api-docs/xds_protocol.rst, "Incremental xDS"):
- Subscriptions are deltas: `resource_names_subscribe` adds names, `..._unsubscribe` drops them.
  They are honoured on every request, even one whose nonce is stale (the doc requires it).
- Wildcard: "*" subscribes to every resource of the type; a first request for a type with no
  names at all is the legacy wildcard (Envoy's LDS/CDS). Unsubscribing "*" ends it.
- Subscribing to a name always answers it, even if the client should have it already: the resource,
  or its name in `removed_resources` when it does not exist.
- `initial_resource_versions` (first request of a type on a new stream) tells what the client
  kept from an earlier stream; only resources whose version differs are sent, and the ones it
  holds that no longer exist are removed.
- A resource the client holds that leaves the snapshot is sent in `removed_resources`.
- Every response has a nonce; the request echoing it is the ACK or (with error_detail) NACK of
  exactly that response. Responses do not wait for ACKs: Envoy applies them in order.
- A NACKed resource version is not sent again until that resource changes (or the client
  re-subscribes to it). We cannot tell which resource in a NACKed response was at fault, so
  the rule covers every resource in it; Envoy keeps its previous versions for all of them, and
  a reconnect's `initial_resource_versions` then brings back whatever it dropped.
- The first request for a wildcard type is answered even when there is nothing to send (unless
  the client declared what it holds): Envoy's CDS/LDS initialisation waits for a response.
- CDS -> EDS re-warm as in SotW (stream.REWARM).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from envoy.service.discovery.v3.discovery_pb2 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
)
from envoy.service.discovery.v3.discovery_pb2 import (
    Resource as WireResource,
)

from mcpgw.log import get_logger
from mcpgw.xds.cache import Resource, Snapshot, TypeResources, ordered_types
from mcpgw.xds.stream import REWARM, WILDCARD, StreamBase, TypeStatus, short_name

log = get_logger(__name__)

_PENDING_LIMIT = 64  # unanswered responses remembered per type; Envoy answers each in order


@dataclass(frozen=True, slots=True)
class _Sent:
    """One response awaiting its ACK/NACK: enough to record either."""

    version: str
    added: Mapping[str, str]  # name -> resource version sent


@dataclass(slots=True)
class DeltaTypeState(TypeStatus):
    """What one delta stream knows about one resource type."""

    # name -> resource version the client holds (as far as we know: set when sent, since
    # Envoy applies responses in order; dropped when it NACKs them or unsubscribes).
    held: dict[str, str] = field(default_factory=dict)
    # name -> resource version the client rejected; not sent again at that version.
    rejected: dict[str, str] = field(default_factory=dict)
    # Names the next response must answer whatever we believe the client holds: just
    # (re)subscribed, or re-warmed by a changed parent.
    notify: set[str] = field(default_factory=set)
    pending: OrderedDict[str, _Sent] = field(default_factory=OrderedDict)

    def interested(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def update_subscription(self, subscribe: Iterable[str], unsubscribe: Iterable[str], first: bool) -> None:
        added, dropped = set(subscribe), set(unsubscribe)
        if WILDCARD in added or (first and not added and not dropped and not self.explicit):
            self.wildcard = True
        if WILDCARD in dropped:
            self.wildcard = False
            # The client drops what it had only through "*"; forget it too, silently.
            for name in [n for n in self.held if n not in self.names and n not in added]:
                self._forget(name)
        self.explicit = self.explicit or bool(added)
        added.discard(WILDCARD)
        dropped.discard(WILDCARD)
        self.names = (self.names | added) - dropped
        self.notify |= added
        for name in dropped - added:
            if self.wildcard:
                # Still covered by "*": the client cannot tell whether to keep it, so the next
                # response must state it (the resource, or its removal).
                self.notify.add(name)
            else:
                self._forget(name)

    def _forget(self, name: str) -> None:
        self.held.pop(name, None)
        self.rejected.pop(name, None)
        self.notify.discard(name)

    def declare_held(self, versions: Mapping[str, str]) -> None:
        """`initial_resource_versions`: what the client kept from an earlier stream."""
        for name, version in versions.items():
            if self.interested(name):
                self.held[name] = version
                self.notify.discard(name)  # it has a version: send only if ours differs

    def changes(self, tr: TypeResources) -> tuple[list[Resource], list[str]]:
        """Resources to send and names to remove so the client matches `tr`."""
        resources = tr.resources
        candidates: Iterable[str] = resources if self.wildcard else self.names
        added = []
        for name in candidates:
            res = resources.get(name)
            if res is None:
                continue
            stale = self.held.get(name) != res.hash and self.rejected.get(name) != res.hash
            if stale or name in self.notify:
                added.append(res)
        removed = [n for n in self.held if n not in resources]
        removed += [n for n in self.notify if n not in resources and n not in self.held]
        added.sort(key=lambda r: r.name)
        removed.sort()
        return added, removed


class DeltaStream(StreamBase[DeltaDiscoveryRequest, DeltaDiscoveryResponse, DeltaTypeState]):
    """Protocol state of one Delta ADS stream (one Envoy connection)."""

    protocol = "delta"

    # -- inputs ---------------------------------------------------------------------------

    def on_request(self, req: DeltaDiscoveryRequest) -> list[DeltaDiscoveryResponse]:
        if not req.type_url:
            log.warning("request_without_type", node=self.node_id, protocol=self.protocol)
            return []
        ts = self.types.get(req.type_url)
        first = ts is None
        if ts is None:
            ts = DeltaTypeState(req.type_url)
            self.types[req.type_url] = ts
        if req.response_nonce:
            self._answer(ts, req)
        subscribing = bool(req.resource_names_subscribe or req.resource_names_unsubscribe)
        if not first and not subscribing:
            # A bare ACK/NACK changes nothing to send: what we sent is already counted as held,
            # and a NACKed version stays rejected.
            return []
        ts.update_subscription(req.resource_names_subscribe, req.resource_names_unsubscribe, first)
        declared = first and bool(req.initial_resource_versions)
        if declared:
            ts.declare_held(req.initial_resource_versions)
        always = first and ts.wildcard and not declared
        return self._with_rewarmed(ts, self._diff_response(ts, self.snapshot.get(ts.type_url), always))

    def on_snapshot(self, snapshot: Snapshot) -> list[DeltaDiscoveryResponse]:
        previous, self.snapshot = self.snapshot, snapshot
        responses = []
        for type_url in ordered_types(self.types):
            ts, tr = self.types[type_url], snapshot.get(type_url)
            if tr.version == previous.version(type_url) and not ts.notify:
                continue  # same resources as the last diff, which left nothing to send
            resp = self._diff_response(ts, tr)
            if resp is not None:
                responses.append(resp)
        return responses

    # -- ACK / NACK -----------------------------------------------------------------------

    def _answer(self, ts: DeltaTypeState, req: DeltaDiscoveryRequest) -> None:
        sent = self._settle(ts, req.response_nonce)
        if sent is None:
            # Already answered, or never ours: nothing to record (subscriptions still apply).
            log.debug(
                "unknown_nonce", node=self.node_id, type=short_name(ts.type_url), nonce=req.response_nonce
            )
            return
        if req.HasField("error_detail"):
            for name, version in sent.added.items():
                ts.rejected[name] = version
                if ts.held.get(name) == version:
                    del ts.held[name]  # Envoy kept its previous version (or nothing)
            client_version = ts.version_acked or ""
            error = req.error_detail.message
            self._record_nack(ts, sent.version, client_version, req.response_nonce, error, sent.added)
        else:
            for name in sent.added:
                ts.rejected.pop(name, None)
            self._record_ack(ts, sent.version, req.response_nonce, sent.added)

    @staticmethod
    def _settle(ts: DeltaTypeState, nonce: str) -> _Sent | None:
        """Pop the response `nonce` answers, and any older ones (Envoy answers in order)."""
        if nonce not in ts.pending:
            return None
        while ts.pending:
            key, sent = ts.pending.popitem(last=False)
            if key == nonce:
                return sent
        return None  # unreachable: nonce was pending

    # -- responses ------------------------------------------------------------------------

    def _diff_response(
        self, ts: DeltaTypeState, tr: TypeResources, always: bool = False
    ) -> DeltaDiscoveryResponse | None:
        """The response that brings the client up to `tr`, or None if it has it already."""
        added, removed = ts.changes(tr)
        if not added and not removed and not always:
            ts.notify.clear()
            return None
        nonce = self._next_nonce()
        resp = DeltaDiscoveryResponse(
            system_version_info=tr.version,
            type_url=ts.type_url,
            nonce=nonce,
            resources=[WireResource(name=r.name, version=r.hash, resource=r.packed) for r in added],
            removed_resources=removed,
        )
        self._rewarm(ts, [r for r in added if ts.held.get(r.name) != r.hash])
        for res in added:
            ts.held[res.name] = res.hash
        for name in removed:
            ts.held.pop(name, None)
            ts.rejected.pop(name, None)
        ts.notify.clear()
        ts.pending[nonce] = _Sent(tr.version, {r.name: r.hash for r in added})
        while len(ts.pending) > _PENDING_LIMIT:
            ts.pending.popitem(last=False)  # a client that never answers must not grow us
        ts.pushed(tr.version, nonce)
        self._log_push(ts, tr.version, nonce, len(added), len(removed))
        return resp

    def _rewarm(self, ts: DeltaTypeState, changed: list[Resource]) -> None:
        """Make the child type resend what changed parents warm on (if subscribed)."""
        rule = REWARM.get(ts.type_url)
        child = self.types.get(rule[0]) if rule else None
        if rule is None or child is None:
            return
        for res in changed:
            child.notify.update(n for n in rule[1](res.message) if child.interested(n))
