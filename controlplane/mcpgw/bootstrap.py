"""Render the Envoy bootstrap that joins a node to the control plane (`envoy/bootstrap.yaml`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

from mcpgw.registry.validate import is_ip

TEMPLATE = Path(__file__).resolve().parents[2] / "envoy" / "bootstrap.yaml"
DEFAULT_BROKER_PORT = 18003


@dataclass(frozen=True)
class BootstrapOptions:
    node_id: str
    xds: tuple[tuple[str, int], ...]
    node_cluster: str = "mcpgw"
    admin_host: str = "127.0.0.1"
    admin_port: int = 9901
    # Delta (incremental) xDS instead of State of the World: Envoy then receives only the
    # resources that changed, and deletions explicitly (api_type DELTA_GRPC).
    delta: bool = False
    # This replica's session broker (HTTP+SSE streams), cluster `mcpgw-broker`.
    broker: tuple[str, int] = ("127.0.0.1", DEFAULT_BROKER_PORT)


def parse_address(text: str) -> tuple[str, int]:
    """`host:port` → (host, port); raises ValueError with the offending text."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {text!r}")
    return host.strip("[]"), int(port)


def render(options: BootstrapOptions) -> str:
    endpoints = "\n".join(
        f"          - priority: {priority}\n"
        f"            lb_endpoints:\n"
        f"              - endpoint: {{address: {{socket_address: {{address: {host}, port_value: {port}}}}}}}"
        for priority, (host, port) in enumerate(options.xds)
    )
    broker_host, broker_port = options.broker
    return Template(TEMPLATE.read_text()).substitute(
        node_id=options.node_id,
        node_cluster=options.node_cluster,
        admin_host=options.admin_host,
        admin_port=options.admin_port,
        xds_endpoints=endpoints,
        api_type="DELTA_GRPC" if options.delta else "GRPC",
        broker_type="STATIC" if is_ip(broker_host) else "STRICT_DNS",
        broker_host=broker_host,
        broker_port=broker_port,
    )
