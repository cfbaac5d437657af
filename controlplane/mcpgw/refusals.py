"""Servers whose configuration Envoy refused, and what the gateway delivers instead.

One server's filter configuration can pass the control plane's checks and still be refused by
Envoy (the filter's `on_configure` fails, or Envoy's own rules). Envoy then NACKs that server's
ECDS resource, but keeps the refused configuration as the last one of that ECDS name: every
later listener version instantiates it again for the composite filter's matcher entry, fails,
and Envoy NACKs the whole listener, so no other server can be added or removed any more
(verified with Envoy 1.40: `Error adding/updating listener(s) mcpgw-http: Unable to create
Wasm plugin mcpgw/<namespace>/<name>`).

So a refused per-server resource is isolated, for as long as the registry still asks for that
same content:
- a server Envoy accepted a configuration of before keeps that one: its last accepted ECDS
  resource is delivered again, which also replaces the refused one Envoy kept;
- a server with no accepted configuration is left out of the listener's matcher (its path
  answers the route's "not ready" 503), so the listener never refers to its ECDS name.
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
# An ECDS name as it appears in Envoy's error text ("Unable to create Wasm plugin mcpgw/a/b").
_ECDS_NAME = re.compile(r"mcpgw/[a-z0-9](?:[a-z0-9-]*[a-z0-9])?/[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_SERVING_LAST = "the last configuration Envoy accepted"
_HELD_OUT = "nothing: left out of the listener until its document changes"


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


class Refusals:
    def __init__(self) -> None:
        # ECDS name -> the refusal of the version the registry currently asks for.
        self.refused: dict[str, Refusal] = {}
        # ECDS name -> the newest version some Envoy accepted (ACKed).
        self._accepted: dict[str, Message] = {}

    def accepted(self, type_url: str, resources: Mapping[str, str], current: Snapshot) -> None:
        """An Envoy ACKed a response carrying `resources` (name -> hash)."""
        if type_url != types.EXTENSION_CONFIG:
            return
        held = current.get(type_url).resources
        for name, res_hash in resources.items():
            resource = held.get(name)
            if resource is not None and resource.hash == res_hash:
                self._accepted[name] = resource.message

    def nacked(self, node: str, nack: Nack, current: Snapshot) -> bool:
        """An Envoy NACKed a response; True when a server's resource is newly found refused."""
        if nack.type_url == types.EXTENSION_CONFIG:
            culprits = _named(nack.error, nack.resources)
            if not culprits and len(nack.resources) == 1:
                culprits = dict(nack.resources)  # one resource in the response: it was that one
        elif nack.type_url == types.LISTENER:
            # The listener carried a refused ECDS configuration: Envoy names its plugin.
            extensions = current.get(types.EXTENSION_CONFIG).resources
            culprits = {
                name: extensions[name].hash for name in _ECDS_NAME.findall(nack.error) if name in extensions
            }
        else:
            return False
        found = False
        for name, res_hash in culprits.items():
            known = self.refused.get(name)
            if known is not None and known.hash == res_hash:
                continue
            self.refused[name] = Refusal(
                server=name.removeprefix(_PREFIX),
                resource=name,
                hash=res_hash,
                node=node,
                type=short_name(nack.type_url),
                error=nack.error.strip(),
                at=time.time(),
            )
            log.error(
                "server_config_refused",
                server=name.removeprefix(_PREFIX),
                resource=name,
                node=node,
                type=short_name(nack.type_url),
                error=nack.error.strip(),
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
        extensions = resources[types.EXTENSION_CONFIG]
        if len(self._accepted) > len(extensions):
            self._accepted = {n: m for n, m in self._accepted.items() if n in extensions}
        if not self.refused:
            return resources
        replaced: dict[str, Message] = {}
        held: list[str] = []
        for name, refusal in list(self.refused.items()):
            message = extensions.get(name)
            if message is None or content_hash(message) != refusal.hash:
                # Deleted, or edited since: the new content gets its chance.
                del self.refused[name]
                log.info("server_config_refusal_cleared", server=refusal.server, resource=name)
                continue
            good = self._accepted.get(name)
            if good is not None and content_hash(good) != refusal.hash:
                replaced[name] = good
                refusal.serving = _SERVING_LAST
            else:
                held.append(refusal.server)
                refusal.serving = _HELD_OUT
        if not replaced and not held:
            return resources
        isolated = dict(resources)
        isolated[types.EXTENSION_CONFIG] = {
            n: m for n, m in {**extensions, **replaced}.items() if n.removeprefix(_PREFIX) not in held
        }
        if held:
            listener = listener_without(snapshot, settings, held)
            isolated[types.LISTENER] = {listener.name: listener}  # type: ignore[attr-defined]
        return isolated

    def status(self) -> list[dict[str, Any]]:
        return [self.refused[name].to_dict() for name in sorted(self.refused)]


def _named(error: str, resources: Mapping[str, str]) -> dict[str, str]:
    """The resources of a response that Envoy's error text names."""
    named = set(_ECDS_NAME.findall(error))
    return {name: res_hash for name, res_hash in resources.items() if name in named}
