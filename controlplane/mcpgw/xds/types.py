"""xDS type URLs and the order in which a control plane must push them.

Envoy warms clusters before their endpoints and listeners before their routes, so a
push that follows this order never leaves a listener pointing at a missing resource.
"""

from typing import Final

CLUSTER: Final = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT: Final = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
EXTENSION_CONFIG: Final = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
LISTENER: Final = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE: Final = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
# SDS: the backend credentials that clusters' credential_injector filters add (generic secrets),
# and the MCP listener's TLS certificate and client CA (file paths on the Envoy node, listenertls.py).
SECRET: Final = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# Clusters, then their secrets and endpoints, then the filter configs a listener references,
# then listeners, then routes. Envoy asks for a secret (and endpoints) only once a cluster or
# the listener names it, and warms that cluster or listener until they arrive.
PUSH_ORDER: Final = (CLUSTER, SECRET, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE)

# In State-of-the-World, every response for these types must carry every resource;
# for the others a response may carry only the resources that changed.
WILDCARD_TYPES: Final = frozenset({CLUSTER, LISTENER})

SHORT_NAMES: Final = {
    CLUSTER: "cds",
    ENDPOINT: "eds",
    EXTENSION_CONFIG: "ecds",
    LISTENER: "lds",
    ROUTE: "rds",
    SECRET: "sds",
}
