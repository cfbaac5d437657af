"""HTTP+SSE through real Envoy: a message posted the moment the `endpoint` event is read is taken.

Regression for "a message posted right after the `endpoint` event sometimes gets 404 'Session
not connected'" (about 1 in 5). The stream was ended by the test's own client: a throwaway
`Events(stream)` held the stream's line iterator, and when it was dropped the event loop
finalized that iterator and httpcore closed the connection (`tests/sseevents.py`). The gateway
was not at fault: the SDK's client never lost a message. Each test repeats the race a bounded
number of times (one through an `Events` thrown away on purpose, as the old helper's callers
did), for one Envoy, and for two Envoys on one control plane sharing one broker or two brokers
on one Redis, posting through the Envoy that does not hold the stream first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from mcp import Client
from mcp.client.sse import sse_client

from tests.integration.conftest import Gateway
from tests.integration.test_sse import ACCEPT_SSE, PATH, Replica, pinned, two_replicas
from tests.redisserver import RedisServer
from tests.sseevents import Events

ROUNDS = 30  # at the old 1 in 5, 30 clean rounds by chance: 0.8**30, about 1 in 800
CROSS_ROUNDS = 15  # two posts a round, the first through the other Envoy


def tools_list(n: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": n, "method": "tools/list"}


async def test_a_message_posted_at_once_is_taken_and_a_refusal_leaves_the_stream(gateway: Gateway) -> None:
    base = gateway.stack.mcp_base_url
    for n in range(ROUNDS):
        async with (
            httpx.AsyncClient(timeout=10) as http,
            http.stream("GET", f"{gateway.url}/sse", headers=ACCEPT_SSE) as stream,
        ):
            assert stream.status_code == 200
            # Thrown away on purpose: reading must not end the stream it reads.
            event, endpoint = await Events(stream).next()
            assert event == "endpoint" and endpoint.startswith(f"{PATH}/message?sessionId=")
            posted = await http.post(f"{base}{endpoint}", json=tools_list(2 * n))
            assert posted.status_code == 202, f"round {n}: {posted.status_code} {posted.text}"
            # Refused by the filter from its headers alone, before the body is read: the
            # client's stream (another connection) goes on.
            refused = await http.post(f"{base}{PATH}/message?sessionId=not-a-session", json=tools_list(0))
            assert refused.status_code == 404 and "Session not connected" not in refused.text
            again = await http.post(f"{base}{endpoint}", json=tools_list(2 * n + 1))
            assert again.status_code == 202, f"round {n}: {again.status_code} {again.text}"
            answers = [await Events(stream).message() for _ in range(2)]
            assert [a["id"] for a in answers] == [2 * n, 2 * n + 1]
            assert all(len(a["result"]["tools"]) == 4 for a in answers)


async def test_the_sdk_sse_client_lists_tools_every_time(gateway: Gateway) -> None:
    for n in range(10):
        async with Client(sse_client(f"{gateway.url}/sse"), mode="legacy") as client:
            tools = (await client.list_tools()).tools
            assert len(tools) == 4, f"round {n}"


async def posts_through_both_envoys(gateway: Gateway, a: Replica, b: Replica) -> None:
    """Rounds of: a stream on whichever Envoy the kernel picks, a message at once through the
    other Envoy, one through the same; both taken (202) and answered on the stream, in order."""
    base = gateway.stack.mcp_base_url
    on = {"A": await pinned(base, a, b), "B": await pinned(base, b, a)}
    try:
        for n in range(CROSS_ROUNDS):
            before = (a.requests(), b.requests())
            async with (
                httpx.AsyncClient(timeout=10) as http,
                http.stream("GET", f"{gateway.url}/sse", headers=ACCEPT_SSE) as stream,
            ):
                events = Events(stream)
                event, endpoint = await events.next()
                assert stream.status_code == 200 and event == "endpoint"
                mine = "A" if (a.requests(), b.requests()) == (before[0] + 1, before[1]) else "B"
                other = "B" if mine == "A" else "A"
                for i, via in enumerate((other, mine)):
                    posted = await on[via].post(f"{base}{endpoint}", json=tools_list(2 * n + i))
                    assert posted.status_code == 202, f"round {n}, stream on {mine}, via {via}: {posted.text}"
                answers = [await events.message() for _ in range(2)]
                assert [answer["id"] for answer in answers] == [2 * n, 2 * n + 1]
    finally:
        for client in on.values():
            await client.aclose()


async def test_two_envoys_sharing_one_broker_take_a_message_posted_at_once(tmp_path: Path) -> None:
    async with two_replicas(tmp_path, None) as (gateway, a, b):
        await posts_through_both_envoys(gateway, a, b)


async def test_two_envoys_with_brokers_on_one_redis_take_a_message_posted_at_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with two_replicas(tmp_path, redis_server.url) as (gateway, a, b):
        await posts_through_both_envoys(gateway, a, b)
