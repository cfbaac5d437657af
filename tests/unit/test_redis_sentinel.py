"""Redis Sentinel against real `redis-server --sentinel` processes: where the clients write, and when a
write counts as done."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcpgw.broker.redisbus import RedisBus
from mcpgw.redisurl import parse
from mcpgw.registry.redisstore import RedisStore
from mcpgw.registry.store import StoreUnavailable
from mcpgw.sessions.store import KeyStoreUnavailable, open_key_store
from mcpgw.stack import free_port
from tests.redisserver import RedisServer, SentinelSetup, _command
from tests.unit.test_registry import minimal


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp_path / "sentinel")
    setup.start()
    try:
        yield setup
    finally:
        setup.stop()


async def failover(setup: SentinelSetup) -> int:
    """Kill the primary; the sentinels' new primary, once they all name it."""
    old = setup.primary_port()
    assert old is not None
    setup.kill(old)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (port := setup.primary_port()) not in (None, old):
            return port
        await asyncio.sleep(0.1)
    raise AssertionError("no failover within 30 s")


async def test_a_write_is_acknowledged_only_once_a_replica_holds_it(sentinel: SentinelSetup) -> None:
    store = RedisStore(sentinel.url)
    try:
        await store.load()
        await store.put(minimal(description="replicated"))
        # On the replica already: the acknowledgement waited for it.
        assert b"replicated" in _command(sentinel.data_ports[1], "HGET", "mcpgw:servers", "default/svc")
        sentinel.kill(sentinel.data_ports[1])
        began = time.monotonic()
        with pytest.raises(StoreUnavailable, match="0 of the 1 replica"):
            await store.put(minimal(description="only on the primary"))
        assert time.monotonic() - began < 5
        # Session keys are written the same way.
        keys = open_key_store(store, sentinel.url)
        with pytest.raises(KeyStoreUnavailable, match="replica"):
            await keys.create('{"keys": []}')
    finally:
        await store.close()


async def test_after_a_failover_writes_reach_the_new_primary(sentinel: SentinelSetup) -> None:
    store = RedisStore(sentinel.url)
    try:
        await store.load()
        await store.put(minimal(description="before"))
        old = sentinel.data_ports[0]
        new = await failover(sentinel)
        # The old node returns as the new primary's replica; writes are acknowledged again.
        sentinel.start_data(old, replica_of=new)
        deadline = time.monotonic() + 20
        while True:
            try:
                await store.put(minimal(description="after"), if_match=store.entry("default/svc").etag)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "writes not accepted again within 20 s of the failover"
                await asyncio.sleep(0.2)
        fresh = RedisStore(sentinel.url)
        await fresh.load()
        assert fresh.entry("default/svc").server.description == "after"
        await fresh.close()
    finally:
        await store.close()


async def test_the_primary_is_the_one_the_newest_sentinel_configuration_names(
    sentinel: SentinelSetup, tmp_path: Path
) -> None:
    new = await failover(sentinel)
    # A sentinel that never heard of the failover (config epoch 0), watching another Redis under
    # the same service name, answers first: its stale primary must not win.
    decoy = RedisServer(tmp_path / "decoy")
    decoy.start()
    port = free_port()
    config = tmp_path / "stale-sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor {SentinelSetup.SERVICE} 127.0.0.1 {decoy.port} 1\n"
    )
    sentinel._spawn(port, [str(config), "--sentinel"])
    try:
        sentinel._wait(port)
        url = sentinel.url.replace("redis+sentinel://", f"redis+sentinel://127.0.0.1:{port},")
        client = parse(url).client(decode_responses=True)
        try:
            assert await client.connection_pool.get_master_address() == ("127.0.0.1", new)
        finally:
            await client.aclose()
    finally:
        decoy.stop()


async def test_the_session_bus_runs_on_sentinel_and_follows_a_failover(sentinel: SentinelSetup) -> None:
    bus = RedisBus(sentinel.url, reconnect_interval=0.2)
    await bus.start()
    try:
        assert bus.up
        assert await bus.publish("nobody", b"x") == 0
        # Its pub/sub connection was on the killed primary: the bus goes down, then up again
        # on the primary the sentinels name now.
        old = sentinel.data_ports[0]
        sentinel.kill(old)
        deadline = time.monotonic() + 5
        while bus.up:
            assert time.monotonic() < deadline, "the bus did not notice the primary's loss"
            await asyncio.sleep(0.02)
        deadline = time.monotonic() + 30
        while not bus.up:
            assert time.monotonic() < deadline, "the bus did not come back on the new primary"
            await asyncio.sleep(0.1)
        assert await bus.publish("nobody", b"x") == 0
    finally:
        await bus.close()
