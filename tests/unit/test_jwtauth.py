"""`auth.jwt` and `auth.oauth`: validation (file, field path, reason) and what the translator
makes of them (jwt_authn before the mcp-server filter, JWKS clusters, the metadata route, the
filter's `auth` object)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_authn_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from mcpgw.registry.model import RegistrySnapshot
from mcpgw.registry.validate import parse_server
from mcpgw.translate import jwtauthn
from mcpgw.translate.envoy import Translator, translate
from mcpgw.translate.groups import OTHER, GroupViews
from mcpgw.xds import types
from tests.unit.test_registry import minimal, problems_of
from tests.unit.test_translate import SETTINGS

ISSUER = "https://idp.example"
JWKS = {"kty": "RSA", "kid": "k1", "n": "sXch", "e": "AQAB", "alg": "RS256", "use": "sig"}


def with_auth(**auth: Any) -> dict[str, Any]:
    block = {"jwt": [{"issuer": ISSUER, "jwks": {"uri": f"{ISSUER}/jwks"}}], **auth}
    return minimal(auth=block)


def jwt(**issuer: Any) -> dict[str, Any]:
    return minimal(auth={"jwt": [{"issuer": ISSUER, "jwks": {"uri": f"{ISSUER}/jwks"}, **issuer}]})


# --- validation --------------------------------------------------------------------------


def test_a_full_block_parses() -> None:
    server = parse_server(
        with_auth(
            required=False,
            oauth={
                "authorizationServers": [ISSUER],
                "scopes": ["tools:read", "tools:call"],
                "requiredScopes": ["tools:call"],
                "resource": "https://gw.example/mcp/default/svc",
            },
        ),
        "f.yaml",
    )
    assert server.auth.required is False
    (issuer,) = server.auth.jwt
    assert (issuer.issuer, issuer.jwks_uri, issuer.cache_seconds) == (ISSUER, f"{ISSUER}/jwks", 300)
    assert (issuer.consumer_claim, issuer.groups_claim, issuer.audiences) == ("sub", "groups", ())
    assert server.auth.oauth.required_scopes == ("tools:call",)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            jwt(jwks={"uri": "http://idp.example/jwks"}),
            ("auth.jwt[0].jwks.uri", "'http://idp.example/jwks' is plain http off this machine: use https"),
        ),
        (
            jwt(jwks={"uri": "ftp://idp.example/jwks"}),
            ("auth.jwt[0].jwks.uri", "is not an absolute http(s) URL"),
        ),
        (jwt(jwks={"uri": "https:///jwks"}), ("auth.jwt[0].jwks.uri", "is not an absolute http(s) URL")),
        (jwt(jwks={"uri": "https://idp.example:99999/jwks"}), ("auth.jwt[0].jwks.uri", "is not a URL")),
        (
            jwt(jwks={"uri": f"{ISSUER}/jwks", "cacheSeconds": 0}),
            ("auth.jwt[0].jwks.cacheSeconds", "from 1 to"),
        ),
        (jwt(jwks={}), ("auth.jwt[0].jwks", "needs exactly one of uri")),
        (jwt(jwks=None), ("auth.jwt[0].jwks", "is required")),
        (jwt(issuer="idp.example"), ("auth.jwt[0].issuer", "is not an absolute http(s) URL")),
        (jwt(consumerClaim="a b"), ("auth.jwt[0].consumerClaim", "is not valid")),
        (jwt(audience=["x"]), ("auth.jwt[0].audience", "unknown field")),
        (jwt(audiences=["a", "a"]), ("auth.jwt[0].audiences[1]", "duplicate 'a'")),
        (
            with_auth(oauth={"authorizationServers": [ISSUER], "scopes": ["tools call"]}),
            ("auth.oauth.scopes[0]", "is not a scope token (RFC 6749 3.3"),
        ),
        (
            with_auth(oauth={"authorizationServers": [ISSUER], "scopes": ['a"b']}),
            ("auth.oauth.scopes[0]", "is not a scope token"),
        ),
        (
            with_auth(oauth={"authorizationServers": [ISSUER], "scopes": ["a"], "requiredScopes": ["b"]}),
            ("auth.oauth.requiredScopes[0]", "'b' is not one of scopes"),
        ),
        (with_auth(oauth={"scopes": ["a"]}), ("auth.oauth.authorizationServers", "is required")),
        (
            with_auth(oauth={"authorizationServers": ["http://idp.example"]}),
            ("auth.oauth.authorizationServers[0]", "plain http off this machine"),
        ),
        (
            with_auth(oauth={"authorizationServers": [ISSUER], "resource": "https://gw/x#frag"}),
            ("auth.oauth.resource", "must not have a fragment"),
        ),
        (minimal(auth={"oauth": {"authorizationServers": [ISSUER]}}), ("auth", "no way to authenticate")),
        (minimal(auth={"jwt": []}), ("auth.jwt", "must list at least one issuer")),
        (
            minimal(auth={"jwt": [{"issuer": ISSUER, "jwks": {"uri": f"{ISSUER}/jwks"}}] * 2}),
            ("auth.jwt[1].issuer", "duplicate issuer"),
        ),
    ],
)
def test_bad_configuration_names_the_field(document: dict[str, Any], expected: tuple[str, str]) -> None:
    path, reason = expected
    found = problems_of(document)
    assert any(p == path and reason in r for p, r in found), found


def test_http_is_fine_toward_loopback() -> None:
    server = parse_server(
        jwt(issuer="http://127.0.0.1:9000", jwks={"uri": "http://localhost:9000/jwks"}), "f.yaml"
    )
    assert server.auth.jwt[0].jwks_uri == "http://localhost:9000/jwks"


def test_a_local_jwks_file_is_checked_and_inlined(tmp_path: Path) -> None:
    good = tmp_path / "jwks.json"
    good.write_text(json.dumps({"keys": [JWKS]}))
    server = parse_server(jwt(jwks={"file": str(good)}), "f.yaml")
    assert json.loads(server.auth.jwt[0].jwks_inline) == {"keys": [JWKS]}
    cases = {
        "not json": ("{", "is not JSON"),
        "no keys": ('{"keys": []}', 'no non-empty "keys" list'),
        "not a jwk": ('{"keys": [{"kid": "x"}]}', 'keys[0] is not a JWK (no "kty")'),
        "private": (json.dumps({"keys": [JWKS | {"d": "secret"}]}), "holds a private or symmetric key"),
    }
    for name, (text, reason) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        found = problems_of(jwt(jwks={"file": str(path)}))
        assert len(found) == 1 and found[0][0] == "auth.jwt[0].jwks.file", (name, found)
        assert found[0][1].startswith(repr(str(path))) and reason in found[0][1], (name, found)
        # Never the file's content in the reason.
        assert "secret" not in found[0][1]
    missing = problems_of(jwt(jwks={"file": str(tmp_path / "absent.json")}))
    assert missing[0][0] == "auth.jwt[0].jwks.file" and "cannot read" in missing[0][1]
    big = tmp_path / "big.json"
    big.write_text(" " * (70 << 10))
    assert "larger than" in problems_of(jwt(jwks={"file": str(big)}))[0][1]


# --- translation -------------------------------------------------------------------------


def translated(document: dict[str, Any]) -> Any:
    server = parse_server(document, "f.yaml")
    return server, translate(RegistrySnapshot(servers=(server,)), SETTINGS)


def http_manager(resources: Any) -> Any:
    listener = resources[types.LISTENER]["mcpgw-http"]
    manager = http_connection_manager_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return manager


def test_jwt_authn_runs_before_the_mcp_filter_and_lets_the_filter_decide() -> None:
    _, resources = translated(jwt(audiences=["https://gw.example/mcp/default/svc"]))
    manager = http_manager(resources)
    assert [f.name for f in manager.http_filters] == [
        "envoy.filters.http.jwt_authn",
        "mcpgw.mcp",
        "envoy.filters.http.router",
    ]
    config = jwt_authn_pb2.JwtAuthentication()
    manager.http_filters[0].typed_config.Unpack(config)
    provider = config.providers["mcpgw/default/svc/jwt0"]
    assert provider.issuer == ISSUER
    assert list(provider.audiences) == ["https://gw.example/mcp/default/svc"]
    assert provider.forward is False
    assert provider.payload_in_metadata == "mcpgw/default/svc/jwt0"
    assert provider.failed_status_in_metadata == "mcpgw/default/svc/jwt0#failed"
    assert provider.remote_jwks.http_uri.cluster == "mcpgw/default/svc/jwks0"
    assert provider.remote_jwks.cache_duration.seconds == 300
    assert provider.remote_jwks.HasField("async_fetch")
    (rule,) = config.rules
    assert rule.match.path_separated_prefix == "/mcp/default/svc"
    requirements = rule.requires.requires_any.requirements
    assert requirements[0].provider_name == "mcpgw/default/svc/jwt0"
    assert requirements[-1].HasField("allow_missing_or_failed")


def test_the_audience_defaults_to_the_canonical_resource_url() -> None:
    _, resources = translated(jwt())
    config = jwt_authn_pb2.JwtAuthentication()
    http_manager(resources).http_filters[0].typed_config.Unpack(config)
    listen = f"http://{SETTINGS.listen_host}:{SETTINGS.listen_port}"
    assert list(config.providers["mcpgw/default/svc/jwt0"].audiences) == [f"{listen}/mcp/default/svc"]


def test_the_jwks_cluster_verifies_the_idp_like_an_https_backend() -> None:
    _, resources = translated(jwt())
    cluster = resources[types.CLUSTER]["mcpgw/default/svc/jwks0"]
    context = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(context)
    assert context.sni == "idp.example"
    validation = context.common_tls_context.validation_context
    assert validation.trusted_ca.filename == SETTINGS.backend_ca_file
    assert validation.match_typed_subject_alt_names[0].matcher.exact == "idp.example"


def test_the_metadata_route_and_the_filter_auth_object() -> None:
    document = with_auth(
        oauth={
            "authorizationServers": [ISSUER],
            "scopes": ["tools:read", "tools:call"],
            "requiredScopes": ["tools:call"],
            "resource": "https://gw.example/mcp/default/svc",
        }
    )
    server, resources = translated(document)
    routes = resources[types.ROUTE]["mcpgw-routes"].virtual_hosts[0].routes
    (route,) = [r for r in routes if r.name == "default/svc/oauth-protected-resource"]
    assert route.match.path == "/.well-known/oauth-protected-resource/mcp/default/svc"
    assert json.loads(route.direct_response.body.inline_string) == {
        "resource": "https://gw.example/mcp/default/svc",
        "authorization_servers": [ISSUER],
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["tools:read", "tools:call"],
    }
    assert jwtauthn.filter_auth(server, SETTINGS) == {
        "required": True,
        "jwt": [{"provider": "mcpgw/default/svc/jwt0", "consumerClaim": "sub", "groupsClaim": "groups"}],
        "resourceMetadata": "https://gw.example/.well-known/oauth-protected-resource/mcp/default/svc",
        "requiredScopes": ["tools:call"],
    }


def test_editing_the_auth_block_alone_rebuilds_the_listener() -> None:
    translator = Translator(SETTINGS)
    first = parse_server(jwt(), "f.yaml")
    translator.translate(RegistrySnapshot(servers=(first,)))
    second = parse_server(jwt(issuer="https://other.example"), "f.yaml")
    result = translator.translate(RegistrySnapshot(servers=(second,)))
    assert result == translate(RegistrySnapshot(servers=(second,)), SETTINGS)
    config = jwt_authn_pb2.JwtAuthentication()
    http_manager(result).http_filters[0].typed_config.Unpack(config)
    assert config.providers["mcpgw/default/svc/jwt0"].issuer == "https://other.example"


def test_no_auth_no_jwt_authn() -> None:
    _, resources = translated(minimal())
    assert [f.name for f in http_manager(resources).http_filters] == [
        "mcpgw.mcp",
        "envoy.filters.http.router",
    ]


def test_a_groups_view_follows_an_auth_edit() -> None:
    """A gateway group's listener and routes are cached per group: an edit of `auth` alone
    (same servers, same limits) must still reach them."""

    def snapshot(issuer: str) -> RegistrySnapshot:
        grouped = minimal(name="g", gateways=["a"])
        grouped["auth"] = {"jwt": [{"issuer": issuer, "jwks": {"uri": f"{issuer}/jwks"}}]}
        grouped["auth"]["oauth"] = {"authorizationServers": [issuer]}
        return RegistrySnapshot(servers=(parse_server(grouped, "g.yaml"), parse_server(minimal(), "f.yaml")))

    translator, groups = Translator(SETTINGS), GroupViews()
    for issuer in ("https://one.example", "https://two.example"):
        current = snapshot(issuer)
        resources = translator.translate(current)
        views = groups.views(current, resources, SETTINGS, (), translator.gateway_groups(), translator.delta)
        assert views is not None
        config = jwt_authn_pb2.JwtAuthentication()
        http_manager(views["a"]).http_filters[0].typed_config.Unpack(config)
        assert config.providers["mcpgw/default/g/jwt0"].issuer == issuer
        assert issuer in str(views["a"][types.ROUTE]["mcpgw-routes"])
        # The group that does not serve it has neither the filter nor the metadata route.
        other = views[OTHER]
        assert "jwt_authn" not in str(other[types.LISTENER]["mcpgw-http"])
        assert issuer not in str(other[types.ROUTE]["mcpgw-routes"])
        assert "mcpgw/default/g/jwks0" in views["a"][types.CLUSTER]
        assert "mcpgw/default/g/jwks0" not in other[types.CLUSTER]
