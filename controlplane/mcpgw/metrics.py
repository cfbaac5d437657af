"""The control plane's Prometheus metrics, served at `/metrics` on the admin port.

Every metric lives in one `CollectorRegistry` per control plane (tests run several control
planes in one process; prometheus-client's global registry would mix them up). Events are
counted through small hooks where they happen (the xDS streams, the registry store, the apply
path); states (registry size, connected Envoys, open broker streams, session-key age) are read
when Prometheus scrapes, so nothing has to keep a gauge in step with them.

Label cardinality stays bounded: `type` is one of the six xDS short names (cds, eds, lds, rds,
ecds, sds); `node` is the node id of a connected Envoy, and a node's series are removed when
its last stream closes, so there are at most as many as there are connected Envoys; `source`
and `component` take the few values listed in docs/observability.md. The registry revision is
one label of one series (the info-style `…_registry_revision_info`), replaced on each apply.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from mcpgw.registry.store import StoreEvents
from mcpgw.xds.types import SHORT_NAMES

__all__ = ["CONTENT_TYPE_LATEST", "PREFIX", "ControlPlaneMetrics", "State"]

PREFIX = "mcpgw_controlplane"
# A translation of a one-server edit takes milliseconds; a full 100,000-tool registry seconds.
_TRANSLATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# From a registry write until every connected Envoy ACKed it: ~10 ms on one machine, seconds
# across a fleet, minutes when something is wrong.
_WRITE_TO_ACK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Writes waiting for their ACKs; beyond this (no Envoy ever ACKs) the oldest are dropped.
_MAX_PENDING_WRITES = 1024


def _type(type_url: str) -> str:
    """The bounded label of an xDS type URL (an unknown one is the URL's last segment)."""
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])


# What the control plane reads at scrape time: a callable per state (None: not known yet).
State = Callable[[], dict[str, Any]]


class _StateCollector(Collector):
    """Gauges read from the control plane at every scrape."""

    def __init__(self, state: State) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        revision = GaugeMetricFamily(
            f"{PREFIX}_registry_revision_info",
            "The registry revision applied and served (value 1; the revision is the label).",
            labels=["revision"],
        )
        if state.get("revision") is not None:
            revision.add_metric([str(state["revision"])], 1)
        yield revision
        for name, key, text in (
            ("registry_servers", "servers", "MCP servers in the applied registry."),
            ("registry_tools", "tools", "Tools of all MCP servers in the applied registry."),
            ("registry_problems", "problems", "Problems keeping the newest registry from being served."),
            ("registry_last_applied_timestamp_seconds", "applied_at", "When a registry was last applied."),
            ("xds_connected_envoys", "envoys", "Envoy nodes with an open ADS stream."),
            ("xds_streams", "streams", "Open ADS streams (an Envoy has one)."),
            ("broker_streams", "broker_streams", "Open HTTP+SSE (2024-11-05) streams the broker holds."),
            ("bridge_sessions", "bridge_sessions", "Open sessions of the HTTP+SSE upstream bridge."),
            ("session_key_age_seconds", "session_key_age", "Age of the key that signs new session ids."),
        ):
            if state.get(key) is not None:
                yield GaugeMetricFamily(f"{PREFIX}_{name}", text, value=float(state[key]))
        unacked = GaugeMetricFamily(
            f"{PREFIX}_xds_unacked_seconds",
            "Per connected node: how long its oldest push has waited for an ACK (0: all ACKed).",
            labels=["node"],
        )
        for node, seconds in sorted(state.get("unacked", {}).items()):
            unacked.add_metric([node], seconds)
        yield unacked


class _Events(StoreEvents):
    """What the registry store reports, counted."""

    def __init__(self, metrics: ControlPlaneMetrics) -> None:
        self._metrics = metrics

    def invalid(self, source: str) -> None:
        self._metrics.validation_failures.labels(source).inc()

    def redis_error(self, component: str) -> None:
        self._metrics.redis_errors.labels(component).inc()

    def redis_reconnected(self, component: str) -> None:
        self._metrics.redis_reconnects.labels(component).inc()


class ControlPlaneMetrics:
    """The metrics of one control plane and the hooks that count them."""

    def __init__(self, state: State) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.validation_failures = Counter(
            f"{PREFIX}_validation_failures",
            "Registry changes refused: source=write (an admin API write), registry (the stored "
            "files or Redis documents), apply (credentials or generated Envoy configuration).",
            ["source"],
            registry=reg,
        )
        self.applies = Counter(f"{PREFIX}_registry_applies", "Registry revisions applied.", registry=reg)
        self.translation = Histogram(
            f"{PREFIX}_translation_seconds",
            "Time to translate a registry into Envoy resources and publish them.",
            buckets=_TRANSLATION_BUCKETS,
            registry=reg,
        )
        self.pushes = Counter(f"{PREFIX}_xds_pushes", "xDS responses sent.", ["type", "node"], registry=reg)
        self.acks = Counter(f"{PREFIX}_xds_acks", "xDS responses ACKed.", ["type", "node"], registry=reg)
        self.nacks = Counter(f"{PREFIX}_xds_nacks", "xDS responses NACKed.", ["type", "node"], registry=reg)
        self.write_to_ack = Histogram(
            f"{PREFIX}_write_to_ack_seconds",
            "From a registry change applied until every connected Envoy ACKed what it caused.",
            buckets=_WRITE_TO_ACK_BUCKETS,
            registry=reg,
        )
        self.redis_errors = Counter(
            f"{PREFIX}_redis_errors",
            "Failed Redis operations, by component (registry, session_keys).",
            ["component"],
            registry=reg,
        )
        self.redis_reconnects = Counter(
            f"{PREFIX}_redis_reconnects",
            "Redis subscriptions re-established after a loss, by component.",
            ["component"],
            registry=reg,
        )
        # Series that alerts watch exist from the start at 0: `increase()` sees their first event.
        for source in ("write", "registry", "apply"):
            self.validation_failures.labels(source)
        reg.register(_StateCollector(state))
        self.store_events = _Events(self)
        # Times of applied changes not yet ACKed everywhere (monotonic clock).
        self._pending: deque[float] = deque(maxlen=_MAX_PENDING_WRITES)
        # Tells whether every connected Envoy ACKed everything pushed (None: no Envoy connected).
        self.settled: Callable[[], bool | None] = lambda: None
        # Scrapes run on the event loop today; the lock keeps them safe if a thread ever serves.
        self._lock = threading.Lock()

    def redis_component(self, component: str) -> None:
        """`component` uses Redis: its error and reconnect series start at 0."""
        self.redis_errors.labels(component)
        self.redis_reconnects.labels(component)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        with self._lock:
            return generate_latest(self.registry)

    # -- hooks: the apply path ----------------------------------------------------------------

    def applied(self, seconds: float, changed: bool) -> None:
        """A registry revision was translated and published in `seconds`; `changed`: Envoys get pushes."""
        self.applies.inc()
        self.translation.observe(seconds)
        if changed:
            self._pending.append(time.monotonic() - seconds)

    # -- hooks: the xDS streams (mcpgw.xds.stream) --------------------------------------------

    def pushed(self, node: str, type_url: str) -> None:
        self.pushes.labels(_type(type_url), node).inc()

    def acked(self, node: str, type_url: str) -> None:
        self.acks.labels(_type(type_url), node).inc()

    def nacked(self, node: str, type_url: str) -> None:
        self.nacks.labels(_type(type_url), node).inc()

    def check_settled(self) -> None:
        """Observe write-to-ACK for every pending change once all connected Envoys ACKed.

        The xDS server calls it when its last stream with something unanswered settles.
        """
        if not self._pending:
            return
        settled = self.settled()
        if settled is None:
            # No Envoy to wait for: there is no ACK to measure.
            self._pending.clear()
        elif settled:
            now = time.monotonic()
            while self._pending:
                self.write_to_ack.observe(now - self._pending.popleft())

    def node_seen(self, node: str) -> None:
        """A stream of `node` opened: its series start at 0, so the first NACK is an increase."""
        for metric in (self.pushes, self.acks, self.nacks):
            for short in SHORT_NAMES.values():
                metric.labels(short, node)

    def node_gone(self, node: str) -> None:
        """`node`'s last stream closed: drop its series, so nodes that left cost nothing."""
        for metric in (self.pushes, self.acks, self.nacks):
            for short in SHORT_NAMES.values():
                with contextlib.suppress(KeyError):
                    metric.remove(short, node)
