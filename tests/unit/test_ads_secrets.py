"""SDS secrets (the credentials backend clusters inject) served over ADS, after their clusters."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from envoy.extensions.transport_sockets.tls.v3.secret_pb2 import Secret

from mcpgw.xds.types import CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, PUSH_ORDER, ROUTE, SECRET
from tests.unit.adsclient import decode, names_of
from tests.unit.adsharness import (
    ENVOY_SUBSCRIPTIONS,
    PROTOCOLS,
    QUIET,
    Harness,
    Resources,
    bootstrap,
    serving,
    world,
)

# Envoy asks for a secret once a cluster names it: right after CDS.
SUBSCRIPTIONS = [ENVOY_SUBSCRIPTIONS[0], (SECRET, ["b1-credential"]), *ENVOY_SUBSCRIPTIONS[1:]]


def credential(value: str) -> Secret:
    return Secret(name="b1-credential", generic_secret={"secret": {"inline_string": value}})


def with_secret(resources: Resources, value: str) -> Resources:
    return {**resources, SECRET: {"b1-credential": credential(value)}}


@pytest.fixture
async def ads() -> AsyncIterator[Harness]:
    async with serving() as harness:
        yield harness


def test_a_secret_is_pushed_right_after_the_clusters_that_name_it() -> None:
    assert PUSH_ORDER == (CLUSTER, SECRET, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_secret_served_on_subscription_and_pushed_after_clusters(ads: Harness, protocol: str) -> None:
    ads.set(with_secret(world(1), "token-1"))
    async with ads.any_client(protocol) as client:
        got = await bootstrap(client, SUBSCRIPTIONS)
        assert decode(got[SECRET])["b1-credential"] == credential("token-1")
        # Everything changes at once: the secret comes after the clusters, before the rest.
        ads.set(with_secret(world(2, servers={"weather": "2", "pets": "2"}), "token-2"))
        pushed = await client.recv_many(6)
        assert [r.type_url for r in pushed] == list(PUSH_ORDER)
        assert decode(pushed[1])["b1-credential"] == credential("token-2")
        for response in pushed:
            await client.ack(response)
        # A new value alone is one SDS push: the clusters that use it do not change.
        ads.set(with_secret(world(2, servers={"weather": "2", "pets": "2"}), "token-3"))
        (only,) = await client.recv_many(1)
        assert only.type_url == SECRET and names_of(only) == ["b1-credential"]
        await client.expect_silence(QUIET)
