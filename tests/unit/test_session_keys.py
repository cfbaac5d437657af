"""Session keys: the model, rotation and expiry, the stores replicas share (a file, a real Redis,
a pinned key), the sessions block in every server's filter config, and the admin API."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from redis.exceptions import RedisError

from mcpgw.admin.app import create_app
from mcpgw.admin.auth import Authorizer
from mcpgw.httpserve import ServedApp, serve
from mcpgw.registry.filesource import FileStore
from mcpgw.registry.redisstore import RedisStore
from mcpgw.sessions.keys import (
    DEFAULT_MAX_ENDED,
    KEY_ID,
    KeysInvalid,
    SessionKey,
    SessionSettings,
    decode_secret,
    encode_secret,
    from_document,
    new_key,
    prune,
    rotate,
    to_document,
)
from mcpgw.sessions.manager import RotationRefused, SessionKeys
from mcpgw.sessions.store import (
    FileKeyStore,
    KeyStoreUnavailable,
    PinnedKeyStore,
    RedisKeyStore,
    default_keys_file,
    open_key_store,
    pinned_key,
)
from mcpgw.translate.envoy import Translator, translate
from mcpgw.xds import types
from mcpgw.xds.cache import SnapshotCache
from tests.redisserver import RedisServer
from tests.unit.test_registry import minimal
from tests.unit.test_translate import SETTINGS, serialized, snapshot_of

TOKEN = "session-keys-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOUR_MS = 3600 * 1000


class Clock:
    """A settable clock, in seconds, for expiry without sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def secrets_of(*managers: SessionKeys) -> set[str]:
    """Every secret the managers know, in the forms that could leak (base64url, base64, hex)."""
    found: set[str] = set()
    for manager in managers:
        for key in manager.keys:
            found |= {encode_secret(key.secret), base64.b64encode(key.secret).decode(), key.secret.hex()}
    return found


def assert_no_secret(text: str, secret_forms: set[str]) -> None:
    assert secret_forms, "nothing to look for"
    leaked = [s for s in secret_forms if s in text]
    assert not leaked, f"a secret appears in: {text[:200]}"


# -- the model -------------------------------------------------------------------------------


def test_a_new_key_is_32_random_bytes_with_a_short_id_and_never_shows_its_secret() -> None:
    one, two = new_key(5), new_key(5)
    assert len(one.secret) == 32 and one.secret != two.secret
    assert KEY_ID.match(one.id) and len(one.id) <= 32 and one.id != two.id
    assert one.created_ms == 5 and one.accept_until_ms == 0
    assert encode_secret(one.secret) not in repr(one) and one.secret.hex() not in repr(one)
    assert "secret" not in json.dumps(one.public(signing=True))
    encoded = encode_secret(one.secret)
    assert len(encoded) == 43 and "=" not in encoded  # base64url, no padding
    assert decode_secret(encoded) == one.secret == decode_secret(encoded + "=")


def test_malformed_secrets_are_refused_without_echoing_them() -> None:
    for bad in ("short", encode_secret(b"x" * 31), "not base64!", encode_secret(b"y" * 33)):
        with pytest.raises(KeysInvalid) as error:
            decode_secret(bad, "$MCPGW_SESSION_KEY")
        assert bad not in str(error.value) and "$MCPGW_SESSION_KEY" in str(error.value)


def test_rotation_puts_a_new_key_first_and_retires_the_others_after_the_grace() -> None:
    first = (new_key(0),)
    second = rotate(first, now_ms=1000, grace_ms=HOUR_MS)
    assert [k.id for k in second][1:] == [first[0].id]
    assert second[0].accept_until_ms == 0 and second[0].created_ms == 1000
    assert second[1].accept_until_ms == 1000 + HOUR_MS and second[1].secret == first[0].secret
    # A later rotation with a longer grace never pushes an earlier deadline back.
    third = rotate(second, now_ms=2000, grace_ms=10 * HOUR_MS)
    assert [k.id for k in third][1:] == [second[0].id, first[0].id]
    assert third[1].accept_until_ms == 2000 + 10 * HOUR_MS
    assert third[2].accept_until_ms == 1000 + HOUR_MS
    # Past its deadline a key is pruned, by `prune` and by the next rotation.
    assert [k.id for k in prune(third, 1000 + HOUR_MS)] == [third[0].id, third[1].id]
    fourth = rotate(third, now_ms=1000 + HOUR_MS, grace_ms=HOUR_MS)
    assert first[0].id not in {k.id for k in fourth} and len(fourth) == 3
    # Grace 0 ends every older key at once.
    assert len(rotate(fourth, now_ms=1000 + HOUR_MS + 1, grace_ms=0)) == 1


def test_the_stored_document_round_trips_and_bad_ones_name_the_field() -> None:
    keys = rotate((new_key(1),), 2, 1000)
    text = to_document(keys)
    assert from_document(text) == keys and to_document(from_document(text)) == text
    document = json.loads(text)

    def problem(edit: Callable[[dict[str, Any]], None]) -> str:
        broken = json.loads(json.dumps(document))
        edit(broken)
        with pytest.raises(KeysInvalid) as error:
            from_document(json.dumps(broken))
        message = str(error.value)
        assert all(encode_secret(k.secret) not in message for k in keys)
        return message

    assert problem(lambda d: d.update(version=7)).startswith("version")
    assert problem(lambda d: d.update(keys=[])).startswith("keys")
    assert problem(lambda d: d["keys"][1].update(id="bad id")).startswith("keys[1].id")
    # The filter refuses it (session.validKeyId), and with it every server's configuration.
    assert problem(lambda d: d["keys"][1].update(id="k1\n")).startswith("keys[1].id")
    assert problem(lambda d: d["keys"][1].update(id=d["keys"][0]["id"])).startswith("keys[1].id")
    assert problem(lambda d: d["keys"][0].update(secret="abc")).startswith("keys[0].secret")
    assert problem(lambda d: d["keys"][0].update(accept_until_ms=5)).startswith("keys[0].accept_until_ms")
    assert problem(lambda d: d["keys"][1].update(created_ms=-1)).startswith("keys[1].created_ms")
    with pytest.raises(KeysInvalid, match="not JSON"):
        from_document("{")


# -- the sessions block in every server's filter configuration ------------------------------


def sessions_settings(keys: tuple[SessionKey, ...], ttl_ms: int = 86_400_000) -> Any:
    return dataclasses.replace(SETTINGS, sessions=SessionSettings(keys, ttl_ms))


def filter_configs(resources: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    from envoy.extensions.filters.http.wasm.v3 import wasm_pb2
    from google.protobuf import wrappers_pb2

    configs = {}
    for name, extension in resources[types.EXTENSION_CONFIG].items():
        wasm = wasm_pb2.Wasm()
        extension.typed_config.Unpack(wasm)
        text = wrappers_pb2.StringValue()
        wasm.config.configuration.Unpack(text)
        configs[name] = json.loads(text.value)
    return configs


def test_every_server_gets_the_sessions_and_broker_blocks_of_the_contract() -> None:
    keys = rotate((new_key(1),), 2, HOUR_MS)
    resources = translate(snapshot_of(minimal(), minimal(name="two")), sessions_settings(keys, 60_000))
    configs = filter_configs(resources)
    assert set(configs) == {"mcpgw/default/svc", "mcpgw/default/two"}
    for config in configs.values():
        assert config["sessions"] == {
            "keys": [
                {"id": keys[0].id, "secret": encode_secret(keys[0].secret), "accept_until_ms": 0},
                {"id": keys[1].id, "secret": encode_secret(keys[1].secret), "accept_until_ms": 2 + HOUR_MS},
            ],
            "ttl_ms": 60_000,
            "max_ended": DEFAULT_MAX_ENDED,
        }
        assert config["broker"] == {"cluster": "mcpgw-broker", "timeout_ms": 5000}
        assert config["base_path"].startswith("/mcp/default/")
    # Without session settings nothing changes: no sessions, no SSE broker.
    plain = filter_configs(translate(snapshot_of(minimal()), SETTINGS))["mcpgw/default/svc"]
    assert "sessions" not in plain and "broker" not in plain


def test_a_rotation_changes_every_extension_config_and_a_tool_edit_still_changes_one() -> None:
    documents = [minimal(name=f"s{i}") for i in range(5)]
    keys = (new_key(1),)
    translator = Translator(sessions_settings(keys))
    hinted, scanned = SnapshotCache(), SnapshotCache()
    first = translator.translate(snapshot_of(*documents))
    hinted.set_resources(first)
    scanned.set_resources(first)

    # Rotation: every server's extension config changes, nothing else does.
    rotated = sessions_settings(rotate(keys, 2, HOUR_MS))
    translator.set_settings(rotated)
    second = translator.translate(snapshot_of(*documents))
    assert translator.delta is not None
    names = {f"mcpgw/default/s{i}" for i in range(5)}
    assert translator.delta.changed == {
        types.CLUSTER: frozenset(),
        types.ENDPOINT: frozenset(),
        types.EXTENSION_CONFIG: frozenset(names),
        types.SECRET: frozenset(),
    }
    before, after = serialized(first), serialized(second)
    changed = {(t, n) for t in after for n in after[t] if before[t].get(n) != after[t][n]}
    assert changed == {(types.EXTENSION_CONFIG, name) for name in names}
    assert serialized(second) == serialized(translate(snapshot_of(*documents), rotated))
    assert all(c["sessions"]["keys"][0]["id"] != keys[0].id for c in filter_configs(second).values())
    # The snapshot cache, given the translator's hint, agrees with a full scan.
    hint = (translator.delta.base, translator.delta.changed)
    assert hinted.set_resources(second, hint) == scanned.set_resources(second) == [types.EXTENSION_CONFIG]
    assert hinted.snapshot.versions() == scanned.snapshot.versions()

    # A tool edit after the rotation is incremental again: one server's config.
    documents[3]["tools"][0]["description"] = "edited"
    third = translator.translate(snapshot_of(*documents))
    assert translator.delta is not None
    assert translator.delta.changed[types.EXTENSION_CONFIG] == {"mcpgw/default/s3"}
    before, after = serialized(second), serialized(third)
    changed = {(t, n) for t in after for n in after[t] if before[t].get(n) != after[t][n]}
    assert changed == {(types.EXTENSION_CONFIG, "mcpgw/default/s3")}
    assert serialized(third) == serialized(translate(snapshot_of(*documents), rotated))


def test_a_rotation_together_with_an_edit_and_back_to_back_rotations_equal_a_fresh_translation() -> None:
    documents = [minimal(name=f"s{i}") for i in range(3)]
    keys = (new_key(1),)
    translator = Translator(sessions_settings(keys))
    translator.translate(snapshot_of(*documents))
    keys = rotate(keys, 2, HOUR_MS)
    translator.set_settings(sessions_settings(keys))
    keys = rotate(keys, 3, HOUR_MS)  # a second change before anything was translated
    translator.set_settings(sessions_settings(keys, ttl_ms=1000))
    documents[0]["tools"][0]["description"] = "edited"
    documents.append(minimal(name="s9"))
    result = translator.translate(snapshot_of(*documents))
    assert serialized(result) == serialized(translate(snapshot_of(*documents), sessions_settings(keys, 1000)))
    # Other settings changing starts afresh, still equal to a fresh translation.
    moved = dataclasses.replace(sessions_settings(keys, 1000), listen_port=10001)
    translator.set_settings(moved)
    assert serialized(translator.translate(snapshot_of(*documents))) == serialized(
        translate(snapshot_of(*documents), moved)
    )


# -- stores ----------------------------------------------------------------------------------


def test_the_default_keys_file_lives_beside_the_registry_never_inside(tmp_path: Path) -> None:
    registry = tmp_path / "gateway" / "registry"
    path = default_keys_file(registry)
    assert path == tmp_path / "gateway" / ".mcpgw" / "registry-session-keys.json"
    assert registry not in path.parents
    store = open_key_store(FileStore(registry), registry, environ={})
    assert isinstance(store, FileKeyStore) and store.path == path
    explicit = open_key_store(FileStore(registry), registry, tmp_path / "k.json", environ={})
    assert isinstance(explicit, FileKeyStore) and explicit.path == tmp_path / "k.json"


async def test_a_file_store_creates_a_private_file_once_and_replicas_agree(tmp_path: Path) -> None:
    path = tmp_path / "state" / "keys.json"
    one, two = SessionKeys(FileKeyStore(path)), SessionKeys(FileKeyStore(path))
    first, second = await asyncio.gather(one.load(), two.load())
    assert first == second and len(first.keys) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert from_document(path.read_text()) == first.keys
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_replica_processes_starting_together_agree_on_the_first_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from mcpgw.sessions.manager import SessionKeys\n"
        "from mcpgw.sessions.store import FileKeyStore\n"
        "print(asyncio.run(SessionKeys(FileKeyStore(Path(sys.argv[1]))).load()).keys[0].id)\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    ids = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert all(process.returncode == 0 for process in processes)
    assert len(ids) == 1 and ids == {from_document(path.read_text())[0].id}


async def test_a_rotation_on_one_replica_reaches_the_other_and_expired_keys_are_pruned(
    tmp_path: Path,
) -> None:
    clock = Clock()
    path = tmp_path / "keys.json"
    one = SessionKeys(FileKeyStore(path), clock=clock, poll_interval=0.05)
    two = SessionKeys(FileKeyStore(path), clock=clock, poll_interval=0.05)
    await one.load()
    await two.load()
    original = one.keys[0]
    seen: asyncio.Queue[SessionSettings] = asyncio.Queue()

    async def on_change(settings: SessionSettings) -> None:
        await seen.put(settings)

    watcher = asyncio.create_task(two.watch(on_change))
    try:
        rotated = await one.rotate(grace_s=60)
        assert [k.id for k in rotated.keys] == [rotated.keys[0].id, original.id]
        changed = await asyncio.wait_for(seen.get(), 2)
        assert changed == rotated and two.keys == one.keys
        # The grace passes: the old key leaves what Envoy gets and the stored document.
        clock.now += 61
        pruned = await asyncio.wait_for(seen.get(), 2)
        assert [k.id for k in pruned.keys] == [rotated.keys[0].id]
        assert [k.id for k in from_document(path.read_text())] == [rotated.keys[0].id]
        assert await one.refresh() and one.keys == two.keys
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


class Interleaved(FileKeyStore):
    """A keys file where another replica rotates right before this one's first compare-and-set."""

    def __init__(self, path: Path, other: SessionKeys) -> None:
        super().__init__(path)
        self.other: SessionKeys | None = other

    async def swap(self, expected: str, text: str) -> bool:
        if self.other is not None:
            other, self.other = self.other, None
            await other.rotate(3600)
        return await super().swap(expected, text)


async def test_concurrent_rotations_on_two_replicas_both_land(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    one = SessionKeys(FileKeyStore(path))
    await one.load()
    two = SessionKeys(Interleaved(path, one))
    await two.load()
    # `one` rotates between `two`'s read and write: `two`'s compare-and-set fails, it reads
    # again and rotates on top, so neither rotation is lost.
    await two.rotate(3600)
    stored = from_document(path.read_text())
    assert len(stored) == 3 and stored[0] == two.keys[0] and stored[1].id == one.keys[0].id


async def check_compare_and_set(store: Any) -> None:
    current = await store.read()
    assert current is not None
    assert not await store.create(to_document((new_key(1),)))
    newer = to_document(rotate(from_document(current), 10, 1000))
    assert not await store.swap(to_document((new_key(2),)), newer)
    assert await store.read() == current
    assert await store.swap(current, newer)
    assert not await store.swap(current, to_document((new_key(3),)))
    assert await store.read() == newer


async def test_file_store_compare_and_set(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "keys.json")
    assert await store.read() is None
    assert await store.create(to_document((new_key(0),)))
    await check_compare_and_set(store)


async def test_a_damaged_keys_file_stops_the_start_and_never_shows_secrets(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    keys = (new_key(1),)
    document = json.loads(to_document(keys))
    document["keys"][0]["id"] = "no spaces allowed"
    path.write_text(json.dumps(document))
    with pytest.raises(KeysInvalid) as error:
        await SessionKeys(FileKeyStore(path)).load()
    assert "keys[0].id" in str(error.value) and str(path) in str(error.value)
    assert encode_secret(keys[0].secret) not in str(error.value)
    # A running replica keeps its good keys when the file goes bad under it.
    good = SessionKeys(FileKeyStore(tmp_path / "good.json"))
    await good.load()
    kept = good.keys
    (tmp_path / "good.json").write_text("{ broken")
    assert not await good.refresh() and good.keys == kept


async def test_an_unwritable_keys_location_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(KeyStoreUnavailable, match=r"cannot (read|write) session keys .*file/keys\.json"):
        await SessionKeys(FileKeyStore(blocker / "keys.json")).load()
    with pytest.raises(KeyStoreUnavailable, match=r"cannot write session keys .*--session-keys"):
        await FileKeyStore(blocker / "keys.json").create("{}")


async def test_redis_replicas_agree_rotate_and_follow_each_other(redis_server: RedisServer) -> None:
    registries = [RedisStore(redis_server.url), RedisStore(redis_server.url)]
    stores = [open_key_store(r, redis_server.url, environ={}) for r in registries]
    assert all(isinstance(s, RedisKeyStore) for s in stores)
    one, two = (SessionKeys(s, poll_interval=0.1) for s in stores)
    try:
        first, second = await asyncio.gather(one.load(), two.load())
        assert first == second
        # The keys live in one value beside the registry hash, under the same prefix.
        stored = await registries[0]._redis.get("mcpgw:session-keys")
        assert from_document(stored) == first.keys
        seen: asyncio.Queue[SessionSettings] = asyncio.Queue()

        async def on_change(settings: SessionSettings) -> None:
            await seen.put(settings)

        watcher = asyncio.create_task(two.watch(on_change))
        try:
            started = time.monotonic()
            rotated = await one.rotate(grace_s=600)
            assert await asyncio.wait_for(seen.get(), 2) == rotated
            assert time.monotonic() - started < 1.5
            # Compare-and-set: a write based on a stale read changes nothing.
            await check_compare_and_set(stores[1])
            # Redis down: rotation fails loudly, the keys in use stay.
            redis_server.stop()
            kept = two.keys
            with pytest.raises(KeyStoreUnavailable):
                await one.rotate(600)
            assert not await two.refresh() and two.keys == kept
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    finally:
        for registry in registries:
            await registry.close()


async def test_keys_lost_by_a_redis_restart_are_written_back_not_replaced(redis_server: RedisServer) -> None:
    """Redis restarted without persistence: a running replica writes back the keys in use, so a
    replica that starts next adopts them instead of making new ones (sessions keep verifying)."""
    registries = [RedisStore(redis_server.url), RedisStore(redis_server.url)]
    running = SessionKeys(open_key_store(registries[0], redis_server.url, environ={}), poll_interval=0.1)
    try:
        in_use = (await running.load()).keys
        redis_server.stop()
        redis_server.start()  # same port, empty
        deadline = time.monotonic() + 10
        while True:
            # The first command on a connection from before the restart fails: retried here.
            with contextlib.suppress(RedisError):
                if await registries[0]._redis.get("mcpgw:session-keys") is not None:
                    break
            assert time.monotonic() < deadline, "the keys in use were not written back"
            await running.refresh()
            await asyncio.sleep(0.1)
        assert running.keys == in_use
        starting = SessionKeys(open_key_store(registries[1], redis_server.url, environ={}))
        assert (await starting.load()).keys == in_use
    finally:
        for registry in registries:
            await registry.close()


async def test_a_pinned_key_from_the_environment(tmp_path: Path) -> None:
    secret = os.urandom(32)
    environ = {"MCPGW_SESSION_KEY": encode_secret(secret)}
    store = open_key_store(FileStore(tmp_path), tmp_path, tmp_path / "ignored.json", environ=environ)
    assert isinstance(store, PinnedKeyStore) and store.pinned
    manager = SessionKeys(store)
    settings = await manager.load()
    assert settings.keys == (pinned_key(secret),) and settings.keys[0].secret == secret
    # Every replica derives the same id from the same secret; nothing is written anywhere.
    assert (await SessionKeys(PinnedKeyStore(secret)).load()).keys[0].id == settings.keys[0].id
    assert not (tmp_path / "ignored.json").exists()
    with pytest.raises(RotationRefused, match="MCPGW_SESSION_KEY"):
        await manager.rotate(60)
    with pytest.raises(KeysInvalid) as error:
        open_key_store(FileStore(tmp_path), tmp_path, environ={"MCPGW_SESSION_KEY": "too-short"})
    assert "too-short" not in str(error.value)


# -- admin API -------------------------------------------------------------------------------


@dataclasses.dataclass
class KeysApi:
    served: ServedApp
    sessions: SessionKeys
    path: Path
    http: httpx.AsyncClient


@pytest.fixture
async def keys_api(tmp_path: Path) -> AsyncIterator[KeysApi]:
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "svc.yaml").write_text(yaml.safe_dump(minimal()))
    store = FileStore(registry)
    await store.load()
    path = tmp_path / "keys.json"
    sessions = SessionKeys(FileKeyStore(path))
    await sessions.load()
    app = create_app(store, lambda: {"sessions": sessions.describe()}, Authorizer(TOKEN, True), sessions)
    served = await serve(app, "127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        try:
            yield KeysApi(served, sessions, path, http)
        finally:
            await served.close()


async def test_admin_api_lists_and_rotates_keys_without_ever_showing_a_secret(
    keys_api: KeysApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    http, sessions = keys_api.http, keys_api.sessions
    known = secrets_of(sessions)
    listed = await http.get("/v1/session-keys")
    assert listed.status_code == 200
    body = listed.json()
    assert body["store"] == f"file {keys_api.path}" and body["pinned"] is False
    assert body["ttl_seconds"] == 86400
    (key,) = body["keys"]
    assert set(key) == {"id", "created", "accept_until", "signing"}
    assert key["signing"] is True and key["accept_until"] is None and key["created"].endswith("Z")

    assert (await http.post("/v1/session-keys/rotate", json={})).status_code == 401
    rotated = await http.post("/v1/session-keys/rotate", headers=AUTH)  # empty body: default grace
    assert rotated.status_code == 200, rotated.text
    keys = rotated.json()["keys"]
    assert [k["signing"] for k in keys] == [True, False] and keys[1]["id"] == key["id"]
    accept_until = datetime.fromisoformat(keys[1]["accept_until"]).timestamp()
    assert abs(accept_until - (time.time() + 3600)) < 60
    rotated = await http.post("/v1/session-keys/rotate", json={"grace_seconds": 0}, headers=AUTH)
    assert rotated.status_code == 200 and len(rotated.json()["keys"]) == 1  # grace 0: older keys end now

    known |= secrets_of(sessions)
    status = await http.get("/status")
    for text in (listed.text, rotated.text, status.text):
        assert_no_secret(text, known)
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "session_keys_rotated" in logged
    assert_no_secret(logged, known)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"grace_seconds": -1}, "grace_seconds"),
        ({"grace_seconds": "3600"}, "grace_seconds"),
        ({"grace_seconds": True}, "grace_seconds"),
        ({"grace_seconds": 10**9}, "grace_seconds"),
        ({"grace": 60}, "grace"),
        ([60], ""),
    ],
)
async def test_admin_api_refuses_a_bad_grace_with_the_field_path(
    keys_api: KeysApi, body: Any, path: str
) -> None:
    before = keys_api.sessions.keys
    response = await keys_api.http.post("/v1/session-keys/rotate", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert [p["path"] for p in response.json()["problems"]] == [path]
    assert keys_api.sessions.keys == before
    bad = await keys_api.http.post(
        "/v1/session-keys/rotate", content=b"{", headers={**AUTH, "content-type": "application/json"}
    )
    assert bad.status_code == 400


async def test_admin_api_answers_409_for_pinned_keys_and_404_without_sessions(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    store = FileStore(registry)
    await store.load()
    pinned = SessionKeys(PinnedKeyStore(os.urandom(32)))
    await pinned.load()
    apps = [
        await serve(create_app(store, dict, Authorizer(TOKEN, True), pinned), "127.0.0.1", 0),
        await serve(create_app(store, dict, Authorizer(TOKEN, True)), "127.0.0.1", 0),
    ]
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(f"{apps[0].url}/v1/session-keys/rotate", headers=AUTH)
            assert response.status_code == 409 and "MCPGW_SESSION_KEY" in response.json()["error"]
            listed = (await http.get(f"{apps[0].url}/v1/session-keys")).json()
            assert listed["pinned"] is True and listed["keys"][0]["created"] is None
            assert (await http.get(f"{apps[1].url}/v1/session-keys")).status_code == 404
    finally:
        for app in apps:
            await app.close()


def test_cli_refuses_a_non_positive_session_ttl() -> None:
    from mcpgw.cli import _parser

    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["serve", "-f", "r", "--session-ttl", "0"])
    assert exit_info.value.code == 2
    args = _parser().parse_args(["serve", "-f", "r", "--session-ttl", "60", "--session-keys", "/tmp/k.json"])
    assert args.session_ttl == 60 and args.session_keys == Path("/tmp/k.json")
    assert _parser().parse_args(["up"]).session_ttl == 86400
    assert _parser().parse_args(["session-keys", "rotate", "--grace", "0"]).grace == 0
