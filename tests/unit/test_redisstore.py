"""The Redis registry store against a real redis-server: shared state, CAS writes, replicas following."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mcpgw.registry.model import RegistrySnapshot
from mcpgw.registry.redisstore import RedisStore, redacted
from mcpgw.registry.store import Conflict, StoreUnavailable
from mcpgw.registry.validate import Invalid
from tests.redisserver import RedisServer
from tests.unit.test_registry import minimal


@contextlib.asynccontextmanager
async def following(store: RedisStore) -> AsyncIterator[asyncio.Queue[RegistrySnapshot]]:
    """Run the store's watcher, collecting every snapshot it emits."""
    seen: asyncio.Queue[RegistrySnapshot] = asyncio.Queue()

    async def on_snapshot(snapshot: RegistrySnapshot) -> None:
        await seen.put(snapshot)

    task = asyncio.create_task(store.watch(on_snapshot))
    await asyncio.sleep(0.1)
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(seen: asyncio.Queue[RegistrySnapshot], check: Any) -> RegistrySnapshot:
    """The first emitted snapshot that satisfies `check` (earlier ones are skipped), within 5 s."""

    async def wait() -> RegistrySnapshot:
        while not check(snapshot := await seen.get()):
            pass
        return snapshot

    return await asyncio.wait_for(wait(), 5)


def described(text: str) -> Any:
    return lambda s: bool(s.servers) and s.servers[0].description == text


async def test_a_write_on_one_replica_reaches_the_other(redis_server: RedisServer) -> None:
    one, two = RedisStore(redis_server.url), RedisStore(redis_server.url)
    try:
        await one.load()
        await two.load()
        async with following(one) as seen_one, following(two) as seen_two:
            await one.put(minimal(description="from one"))
            await until(seen_two, described("from one"))
            await until(seen_one, described("from one"))
            await two.put(minimal(description="from two"), if_match=two.entry("default/svc").etag)
            await until(seen_one, described("from two"))
            await one.delete("default/svc")
            await until(seen_two, lambda s: s.servers == ())
    finally:
        await one.close()
        await two.close()


async def test_stale_writes_conflict_even_across_replicas(redis_server: RedisServer) -> None:
    one, two = RedisStore(redis_server.url), RedisStore(redis_server.url)
    try:
        await one.load()
        await one.put(minimal())
        await two.load()
        etag = two.entry("default/svc").etag
        await one.put(minimal(description="newer"), if_match=etag)
        # `two` has not seen the newer write yet: its compare-and-set against Redis must fail
        # for a write made under the old etag (a write without one goes ahead: see below).
        with pytest.raises(Conflict):
            await two.put(minimal(description="stale"), if_match=etag)
        await two.load()
        assert two.entry("default/svc").server.description == "newer"
        with pytest.raises(Invalid):
            await one.put({**minimal(), "tools": "not a list"})
    finally:
        await one.close()
        await two.close()


async def test_redis_down_is_reported_not_hidden(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    try:
        await store.load()
        await store.put(minimal())
        redis_server.stop()
        with pytest.raises(StoreUnavailable):
            await store.put(minimal(description="lost?"))
        # The last good registry stays served; a failed reload says why.
        assert not await store.load()
        assert store.snapshot is not None and store.snapshot.servers[0].description == ""
        assert "cannot read the registry" in store.problems[0].reason
    finally:
        await store.close()


def test_passwords_never_appear_in_descriptions() -> None:
    assert redacted("redis://user:s3cret@db.internal:6380/2") == "redis://user:***@db.internal:6380/2"
    assert "s3cret" not in RedisStore("redis://:s3cret@127.0.0.1:1/0").description


async def test_admin_api_answers_503_when_redis_is_down(redis_server: RedisServer, tmp_path: Any) -> None:
    import httpx

    from mcpgw.admin.app import create_app
    from mcpgw.admin.auth import Authorizer
    from mcpgw.httpserve import serve

    store = RedisStore(redis_server.url)
    await store.load()
    await store.put(minimal())
    app = create_app(store, lambda: {}, Authorizer(token="t", open_reads=True))
    served = await serve(app, "127.0.0.1", 0)
    try:
        redis_server.stop()
        async with httpx.AsyncClient() as http:
            response = await http.put(
                f"{served.url}/v1/servers/default/svc",
                json=minimal(description="x"),
                headers={"authorization": "Bearer t"},
            )
        assert response.status_code == 503 and "unavailable" in response.json()["error"]
    finally:
        await served.close()
        await store.close()


async def test_a_malformed_event_on_the_channel_does_not_stop_following(redis_server: RedisServer) -> None:
    """Anyone with access to Redis can publish on the events channel: garbage there is skipped,
    and the next real write still reaches the other replica."""
    one, two = RedisStore(redis_server.url), RedisStore(redis_server.url)
    try:
        await one.load()
        await two.load()
        async with following(two) as seen_two:
            for garbage in ("not json", "[1, 2]", '{"key": 7}', "{}"):
                await one._redis.publish(one._channel, garbage)
            await one.put(minimal(description="after the garbage"))
            await until(seen_two, described("after the garbage"))
    finally:
        await one.close()
        await two.close()


async def test_a_write_without_precondition_goes_ahead_when_this_replica_missed_another_write(
    redis_server: RedisServer,
) -> None:
    # Replica two does not follow the channel (as while its watcher reconnects after a Redis
    # restart or a Sentinel failover): it misses one's writes. Found by bench/chaos.py, where
    # such PUTs without If-Match were answered 412 until the watcher resynced.
    one, two = RedisStore(redis_server.url), RedisStore(redis_server.url)
    try:
        await one.load()
        await one.put(minimal(description="v1"))
        await two.load()
        await one.put(minimal(description="v2"))
        written = await two.put(minimal(description="v3"))
        assert written.server.description == "v3"
        check = RedisStore(redis_server.url)
        await check.load()
        assert check.entry("default/svc").server.description == "v3"
        await check.close()
        # A precondition the replica's stale view still satisfies is refused, and the replica
        # learns the current document.
        await one.put(minimal(description="v4"))
        with pytest.raises(Conflict):
            await two.put(minimal(description="v5"), if_match=two.entry("default/svc").etag)
        assert two.entry("default/svc").server.description == "v4"
        # So does a create of a server this replica has not heard of.
        await one.put(minimal(name="other"))
        with pytest.raises(Conflict):
            await two.put(minimal(name="other"), create=True)
        assert two.entry("default/other").server.name == "other"
    finally:
        await one.close()
        await two.close()


async def test_a_redis_that_comes_back_empty_gets_the_registry_back_not_an_empty_gateway(
    redis_server: RedisServer,
) -> None:
    """Redis restarted without persistence: the replicas write back what they serve (once,
    atomically), instead of handing every Envoy an empty registry. A deletion of every server
    stays a deletion."""
    one, two = RedisStore(redis_server.url), RedisStore(redis_server.url)
    try:
        await one.load()
        await two.load()
        async with following(one) as seen_one, following(two) as seen_two:
            await one.put(minimal(description="keep me"))
            await one.put(minimal(name="other"))
            for seen in (seen_one, seen_two):
                await until(seen, lambda s: len(s.servers) == 2)
                while not seen.empty():
                    seen.get_nowait()
            redis_server.stop()
            redis_server.start()  # same port, no persistence: empty
            # Both watchers reconnect and resync; neither may ever emit an empty registry.
            deadline = asyncio.get_running_loop().time() + 10
            while not await redis_server_has(redis_server, "default/svc", "default/other"):
                assert asyncio.get_running_loop().time() < deadline, "the registry was not written back"
                await asyncio.sleep(0.1)
            for seen in (seen_one, seen_two):
                while not seen.empty():
                    assert len(seen.get_nowait().servers) == 2
            for store in (one, two):
                assert store.snapshot is not None and len(store.snapshot.servers) == 2
                assert store.entry("default/svc").document["description"] == "keep me"
            # A write after the restore works as before; deleting everything empties the registry.
            await two.put(minimal(description="after"), if_match=two.entry("default/svc").etag)
            await until(seen_one, lambda s: any(x.description == "after" for x in s.servers))
            await one.delete("default/svc")
            await one.delete("default/other")
            await until(seen_two, lambda s: s.servers == ())
            assert await two.load() is False and two.snapshot is not None and two.snapshot.servers == ()
    finally:
        await one.close()
        await two.close()


async def redis_server_has(server: RedisServer, *keys: str) -> bool:
    probe = RedisStore(server.url)
    try:
        stored = await probe._redis.hgetall("mcpgw:servers")
        return all(key in stored for key in keys)
    except Exception:
        return False
    finally:
        await probe.close()
