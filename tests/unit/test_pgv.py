"""Generated resources are checked against Envoy's own validation rules before any node sees them."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import extension_pb2
from envoy.config.route.v3 import route_pb2

from mcpgw.translate.envoy import translate
from mcpgw.translate.pgv import ResourceInvalid, check
from mcpgw.xds import types
from tests.unit.test_registry import minimal
from tests.unit.test_translate import SETTINGS, snapshot_of


def test_everything_the_translator_generates_passes() -> None:
    resources = translate(
        snapshot_of(
            minimal(), minimal(name="b", backend={"endpoints": ["api.internal:443"], "scheme": "https"})
        ),
        SETTINGS,
    )
    for named in resources.values():
        for message in named.values():
            check(message)


def cluster() -> cluster_pb2.Cluster:
    message = cluster_pb2.Cluster()
    message.CopyFrom(translate(snapshot_of(minimal()), SETTINGS)[types.CLUSTER]["mcpgw/default/svc"])
    return message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c.connect_timeout.__setattr__("seconds", -1),
            "Cluster.connect_timeout: -1.0s must be greater than 0.0s",
        ),
        (lambda c: c.__setattr__("name", ""), "Cluster.name: must have at least 1 character(s)"),
        (lambda c: c.__setattr__("lb_policy", 99), "Cluster.lb_policy: 99 is not a defined LbPolicy"),
    ],
)
def test_broken_cluster_is_named_with_its_field(change: object, message: str) -> None:
    broken = cluster()
    change(broken)  # type: ignore[operator]
    with pytest.raises(
        ResourceInvalid, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        check(broken)


def test_rules_inside_any_and_repeated_fields_are_checked() -> None:
    routes = route_pb2.RouteConfiguration(name="r")
    host = routes.virtual_hosts.add(name="v")  # a virtual host needs at least one domain
    with pytest.raises(ResourceInvalid, match=r"virtual_hosts\[0\]\.domains: needs at least 1 item"):
        check(routes)
    host.domains.append("*")
    host.request_headers_to_add.add().header.key = "bad header\n"
    with pytest.raises(ResourceInvalid, match="not a valid HTTP header name"):
        check(routes)
    extension = extension_pb2.TypedExtensionConfig(name="x")
    extension.typed_config.Pack(cluster_pb2.Cluster(name=""))
    with pytest.raises(ResourceInvalid, match=r"typed_config<Cluster>\.name"):
        check(extension)
