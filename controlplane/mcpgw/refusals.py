"""Servers whose configuration Envoy refused, and what the gateway delivers instead.

One server's filter configuration can pass the control plane's checks and still be refused by
Envoy (the filter's `on_configure` fails, or Envoy's own rules). Envoy then NACKs that server's
ECDS resource, but keeps the refused configuration as the last one of that ECDS name: every
later listener version instantiates it again for the composite filter's matcher entry, fails,
and Envoy NACKs the whole listener, so no other server can be added or removed any more
(verified with Envoy 1.40: `Error adding/updating listener(s) mcpgw-http: Unable to create
Wasm plugin mcpgw/<namespace>/<name>`).

Clusters are per server too, but do not poison anything: Envoy applies every valid cluster of
a CDS response and NACKs the response naming the invalid ones, again with every later CDS
response while the invalid one is in it.

So a refused per-server resource (a server's ECDS config or one of its clusters) is isolated,
for as long as the registry still asks for that same content:
- if Envoy accepted an earlier version of it, that version is delivered again (for ECDS this
  also replaces the refused one Envoy kept): the server keeps serving what it served;
- if not, the resource is left out; a server without an accepted ECDS config is also left out
  of the listener's matcher (its path answers the route's "not ready" 503), so the listener
  never refers to its ECDS name.
An edit of the server (new content) gets its chance again. `/status` lists every refusal with
the server, the resource, the node and Envoy's error.

Envoy runs the same filter on every node, so a refusal by any node applies to all.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from mcpgw.log import get_logger
from mcpgw.registry.model import RegistrySnapshot
from mcpgw.translate.envoy import GatewaySettings, Resources, listener_without
from mcpgw.xds import types
from mcpgw.xds.cache import Snapshot, content_hash
from mcpgw.xds.stream import Nack, iso, short_name

log = get_logger(__name__)

_PREFIX = "mcpgw/"
# A per-server resource name as it appears in Envoy's error text: an ECDS config
# ("Unable to create Wasm plugin mcpgw/a/b") or a cluster (`mcpgw/a/b`, `mcpgw/a/b|h0`).
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_RESOURCE_NAME = re.compile(rf"mcpgw/{_LABEL}/{_LABEL}(?:\|h[0-9]+)?")
# Types whose resources belong to one server, and can be isolated one by one.
PER_SERVER = (types.EXTENSION_CONFIG, types.CLUSTER)
_SERVING_LAST = "the last configuration Envoy accepted"
_HELD_OUT = "nothing: left out of the listener until its document changes"
_LEFT_OUT = "nothing: this resource is left out until its document changes"


@dataclass
class Refusal:
    server: str  # registry key, namespace/name
    resource: str  # the ECDS resource name
    hash: str  # content hash of the refused version
    node: str
    type: str  # the xDS type Envoy NACKed (ecds; lds when the listener carried the refusal)
    error: str
    at: float
    serving: str = _HELD_OUT

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "resource": self.resource,
            "type": self.type,
            "node": self.node,
            "error": self.error,
            "at": iso(self.at),
            "serving": self.serving,
        }


Key = tuple[str, str]  # (type URL, resource name)


class Refusals:
    def __init__(self) -> None:
        # (type, name) -> the refusal of the version the registry currently asks for.
        self.refused: dict[Key, Refusal] = {}
        # type -> name -> the newest version some Envoy accepted (ACKed).
        self._accepted: dict[str, dict[str, Message]] = {url: {} for url in PER_SERVER}

    def accepted(self, type_url: str, resources: Mapping[str, str], current: Snapshot) -> None:
        """An Envoy ACKed a response carrying `resources` (name -> hash)."""
        accepted = self._accepted.get(type_url)
        if accepted is None:
            return
        held = current.get(type_url).resources
        for name, res_hash in resources.items():
            resource = held.get(name)
            if resource is not None and resource.hash == res_hash:
                accepted[name] = resource.message

    def nacked(self, node: str, nack: Nack, current: Snapshot) -> bool:
        """An Envoy NACKed a response; True when a server's resource is newly found refused."""
        type_url = nack.type_url
        if type_url in PER_SERVER:
            culprits = _named(nack.error, nack.resources)
            if not culprits and len(nack.resources) == 1:
                culprits = dict(nack.resources)  # one resource in the response: it was that one
        elif type_url == types.LISTENER:
            # The listener carried a refused ECDS configuration: Envoy names its plugin.
            type_url = types.EXTENSION_CONFIG
            extensions = current.get(type_url).resources
            culprits = {n: extensions[n].hash for n in _RESOURCE_NAME.findall(nack.error) if n in extensions}
        else:
            return False
        found = False
        for name, res_hash in culprits.items():
            known = self.refused.get((type_url, name))
            if known is not None and known.hash == res_hash:
                continue
            refusal = Refusal(
                server=_server_of(name),
                resource=name,
                hash=res_hash,
                node=node,
                type=short_name(nack.type_url),
                error=nack.error.strip(),
                at=time.time(),
            )
            self.refused[(type_url, name)] = refusal
            log.error(
                "server_config_refused",
                server=refusal.server,
                resource=name,
                node=node,
                type=refusal.type,
                error=refusal.error,
            )
            found = True
        return found

    def isolate(
        self, snapshot: RegistrySnapshot, resources: Resources, settings: GatewaySettings
    ) -> Resources:
        """`resources` with every refused server isolated (see the module docstring).

        Returns `resources` itself when nothing is refused, so the translator's change hint
        stays valid for the cache.
        """
        for type_url, accepted in self._accepted.items():
            current = resources.get(type_url, {})
            if len(accepted) > len(current):  # servers were deleted: forget theirs
                self._accepted[type_url] = {n: m for n, m in accepted.items() if n in current}
        if not self.refused:
            return resources
        replaced: dict[str, dict[str, Message]] = {}
        dropped: dict[str, set[str]] = {}
        for key, refusal in list(self.refused.items()):
            type_url, name = key
            message = resources.get(type_url, {}).get(name)
            if message is None or content_hash(message) != refusal.hash:
                # Deleted, or edited since: the new content gets its chance.
                del self.refused[key]
                log.info("server_config_refusal_cleared", server=refusal.server, resource=name)
                continue
            good = self._accepted[type_url].get(name)
            if good is not None and content_hash(good) != refusal.hash:
                replaced.setdefault(type_url, {})[name] = good
                refusal.serving = _SERVING_LAST
            else:
                dropped.setdefault(type_url, set()).add(name)
                refusal.serving = _HELD_OUT if type_url == types.EXTENSION_CONFIG else _LEFT_OUT
        if not replaced and not dropped:
            return resources
        isolated = dict(resources)
        for type_url in replaced.keys() | dropped.keys():
            gone = dropped.get(type_url, set())
            merged = {**resources[type_url], **replaced.get(type_url, {})}
            isolated[type_url] = {n: m for n, m in merged.items() if n not in gone}
        held = {_server_of(name) for name in dropped.get(types.EXTENSION_CONFIG, ())}
        if held:
            listener = listener_without(snapshot, settings, held)
            isolated[types.LISTENER] = {listener.name: listener}  # type: ignore[attr-defined]
        return isolated

    def status(self) -> list[dict[str, Any]]:
        return [self.refused[key].to_dict() for key in sorted(self.refused, key=lambda k: (k[1], k[0]))]


def _server_of(name: str) -> str:
    """`mcpgw/ns/name` or `mcpgw/ns/name|h0` -> `ns/name`."""
    return name.removeprefix(_PREFIX).partition("|")[0]


def _named(error: str, resources: Mapping[str, str]) -> dict[str, str]:
    """The resources of a response that Envoy's error text names."""
    named = set(_RESOURCE_NAME.findall(error))
    return {name: res_hash for name, res_hash in resources.items() if name in named}
