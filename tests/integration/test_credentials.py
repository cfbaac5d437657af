"""`{file:}` / `{env:}` credentials against the whole stack, with the allow-list `mcpgw serve` uses.

Whoever holds the admin token chooses what the control plane reads and which backend receives
it. A FIFO must not freeze the control plane, `/dev/zero` or a huge file must not be read in
full, nothing outside the allow-list (nor mcpgw's own session keys inside it) may be sent, and
the 422 must not tell a missing file from a refused one. An allowed credential still reaches
the backend through Envoy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mcp import Client

from mcpgw.registry.secrets import MAX_CREDENTIAL_BYTES, UNAVAILABLE, CredentialPolicy
from tests.integration.conftest import Gateway, copy_registry, free_port, running_gateway
from tests.waiting import eventually

TOKEN = "credentials-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FILE_TOKEN = "file-token-1"
ENV_KEY = "env-key-2"


def orders_doc(backend_port: int, credential: dict[str, str], name: str = "orders") -> dict[str, Any]:
    """A server whose one tool sends `credential` as a bearer token to the demo backend."""
    return {
        "kind": "McpServer",
        "namespace": "shop",
        "name": name,
        "backend": {"endpoints": [f"127.0.0.1:{backend_port}"]},
        "securitySchemes": [{"id": "t", "type": "http", "scheme": "bearer", "defaultCredential": credential}],
        "tools": [
            {
                "name": "countPets",
                "description": "How many pets the store has.",
                "requestTemplate": {"url": "/v1/pets", "method": "GET", "security": {"id": "t"}},
                "responseTemplate": {"body": "{{len .}} pets"},
            }
        ],
    }


class Setup:
    def __init__(self, gateway: Gateway, creds: Path, outside: Path) -> None:
        self.gateway = gateway
        self.creds = creds
        self.outside = outside

    @property
    def admin(self) -> str:
        assert self.gateway.stack.control_plane is not None
        return f"http://127.0.0.1:{self.gateway.stack.control_plane.status_port}"

    @property
    def backend_port(self) -> int:
        assert self.gateway.stack.demo is not None
        return self.gateway.stack.demo.port


@pytest.fixture
async def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Setup]:
    monkeypatch.setenv("MCPGW_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("MCPGW_CRED_ORDERS_KEY", ENV_KEY)
    monkeypatch.setenv("OTHER_SECRET", "not-for-backends")
    creds, outside = tmp_path / "creds", tmp_path / "outside"
    creds.mkdir()
    outside.mkdir()
    (creds / "token").write_text(FILE_TOKEN + "\n")
    (outside / "token").write_text("not-for-backends\n")
    backend_port = free_port()
    registry = copy_registry(tmp_path / "registry", backend_port)
    async with running_gateway(
        tmp_path,
        registry,
        backend_port,
        # The session keys live inside the allowed directory: they must be refused all the same.
        session_keys_file=creds / "session-keys.json",
        # /dev too, to show that allowing a directory never allows its devices.
        credentials=CredentialPolicy.allow_list([creds, Path("/dev")], ["MCPGW_CRED_*"]),
    ) as gateway:
        yield Setup(gateway, creds, outside)


def reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        str(r.fields["reason"])  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "credential_unavailable"
    ]


async def test_refused_credentials_get_one_generic_422_and_their_reason_in_the_log(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    big = setup.creds / "big"
    big.write_text("k" * (MAX_CREDENTIAL_BYTES + 1))
    fifo = setup.creds / "fifo"
    os.mkfifo(fifo)
    cases = {
        "missing": ({"file": str(setup.creds / "missing")}, "No such file or directory"),
        "outside": ({"file": str(setup.outside / "token")}, "outside the credential directories"),
        "dev-zero": ({"file": "/dev/zero"}, "not a regular file (a character device)"),
        "fifo": ({"file": str(fifo)}, "not a regular file (a FIFO)"),
        "oversize": ({"file": str(big)}, f"larger than {MAX_CREDENTIAL_BYTES} bytes"),
        "session-keys": ({"file": str(setup.creds / "session-keys.json")}, "mcpgw's own secret"),
        "env-outside": ({"env": "OTHER_SECRET"}, "matches none of the allowed names"),
        "env-own": ({"env": "MCPGW_ADMIN_TOKEN"}, "mcpgw's own"),
    }
    assert (setup.creds / "session-keys.json").is_file()
    bodies: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=setup.admin, timeout=10) as admin:
        for case, (credential, reason) in cases.items():
            caplog.clear()
            started = time.monotonic()
            response = await admin.post(
                "/v1/servers", json=orders_doc(setup.backend_port, credential), headers=AUTH
            )
            assert time.monotonic() - started < 1, case
            assert response.status_code == 422, (case, response.text)
            bodies[case] = response.json()
            assert any(reason in logged for logged in reasons(caplog)), (case, reasons(caplog))
        assert (await admin.get("/v1/servers/shop/orders")).status_code == 404
    # One answer for every case: nothing tells a missing file from a refused or unreadable one.
    expected = {
        "error": "invalid document",
        "problems": [
            {
                "file": f"{setup.gateway.registry}: shop/orders",
                "path": "securitySchemes[0].defaultCredential",
                "reason": UNAVAILABLE,
            }
        ],
    }
    assert bodies == dict.fromkeys(cases, expected)
    # The secrets themselves never reached the log.
    assert "not-for-backends" not in caplog.text and TOKEN not in caplog.text


def rescue_fifo_readers(fifo: Path, after: float, stop: threading.Event) -> threading.Thread:
    """After `after` seconds, open `fifo` for writing whenever a reader waits on it, then close it.

    A control plane that does block on the FIFO then gets unstuck (EOF), so a regression fails
    the test's timing checks instead of hanging it.
    """

    def rescue() -> None:
        if stop.wait(after):
            return
        while not stop.wait(0.05):
            try:
                # Non-blocking: fails with ENXIO unless someone has the FIFO open for reading.
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                continue

    thread = threading.Thread(target=rescue, name="fifo-rescuer", daemon=True)
    thread.start()
    return thread


async def test_a_fifo_credential_does_not_freeze_the_control_plane(setup: Setup) -> None:
    """The reported attack: a registry naming a FIFO froze the admin API, xDS and the broker."""
    fifo = setup.creds / "fifo"
    os.mkfifo(fifo)
    gateway = setup.gateway
    control_plane = gateway.stack.control_plane
    assert control_plane is not None
    # How long the event loop (admin API, xDS, broker: all on it) went without running a task.
    longest_stall = 0.0

    async def watch_the_loop() -> None:
        nonlocal longest_stall
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            longest_stall = max(longest_stall, now - last - 0.05)
            last = now

    watcher = asyncio.create_task(watch_the_loop())
    stop = threading.Event()
    rescuer = rescue_fifo_readers(fifo, 3.0, stop)
    try:
        # Through the file registry, as a file edit: applied and retried by the control plane
        # itself (every 5 s), with no client request waiting on it.
        document = gateway.registry / "fifo.yaml"
        document.write_text(yaml.safe_dump(orders_doc(setup.backend_port, {"file": str(fifo)})))
        await eventually(lambda: control_plane.rejections, 10, "the registry naming a FIFO is rejected")
        async with httpx.AsyncClient(base_url=setup.admin, timeout=10) as admin:
            # Across a retry of the rejected registry, the admin API keeps answering at once...
            deadline = time.monotonic() + control_plane.options.rejected_retry_s + 1
            slowest = 0.0
            while time.monotonic() < deadline:
                started = time.monotonic()
                assert (await admin.get("/healthz")).status_code == 200
                assert (await admin.get("/status")).status_code == 200
                slowest = max(slowest, time.monotonic() - started)
                await asyncio.sleep(0.2)
            problems = (await admin.get("/status")).json()["registry"]["problems"]
        assert slowest < 1, f"the admin API took {slowest:.2f} s to answer"
        assert longest_stall < 1, f"the event loop stalled for {longest_stall:.2f} s"
        assert [p["reason"] for p in problems] == [UNAVAILABLE]
    finally:
        watcher.cancel()
        stop.set()
        rescuer.join(5)
    # ...Envoy keeps serving what it had...
    async with Client(gateway.url, mode="legacy") as client:
        assert (await client.list_tools(cache_mode="bypass")).tools
    # ...and the pipeline is alive: fixing the registry reaches Envoy over xDS.
    document.write_text(yaml.safe_dump(orders_doc(setup.backend_port, {"file": str(setup.creds / "token")})))
    url = f"{gateway.stack.mcp_base_url}/mcp/shop/orders"

    async def served() -> bool:
        async with Client(url, mode="legacy") as client:
            return bool((await client.list_tools(cache_mode="bypass")).tools)

    await eventually(served, 15, "the fixed registry is served", ignore=(Exception,))
    assert control_plane.rejections == []


async def test_allowed_credentials_reach_the_backend_through_envoy(setup: Setup) -> None:
    gateway = setup.gateway
    async with httpx.AsyncClient(base_url=setup.admin, timeout=10) as admin:
        for name, credential in (
            ("by-file", {"file": str(setup.creds / "token")}),
            ("by-env", {"env": "MCPGW_CRED_ORDERS_KEY"}),
        ):
            document = orders_doc(setup.backend_port, credential, name)
            response = await admin.post("/v1/servers", json=document, headers=AUTH)
            assert response.status_code == 201, response.text
    for name, sent in (("by-file", FILE_TOKEN), ("by-env", ENV_KEY)):
        url = f"{gateway.stack.mcp_base_url}/mcp/shop/{name}"

        async def call(url: str = url) -> str:
            async with Client(url, mode="legacy") as client:
                return str((await client.call_tool("countPets", {})).content[0].text)  # type: ignore[union-attr]

        assert await eventually(call, 15, f"{name} is served", ignore=(Exception,)) == "3 pets"
        assert gateway.backend_requests[-1].headers["authorization"] == f"Bearer {sent}"


async def test_an_apply_that_reads_slowly_is_never_published_over_a_newer_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials are read off the event loop, so two applies can overlap; the newest wins."""
    import mcpgw.controlplane as controlplane_module
    from mcpgw.controlplane import ControlPlane, ControlPlaneOptions
    from mcpgw.registry.model import RegistrySnapshot
    from mcpgw.registry.secrets import resolve_off_loop
    from mcpgw.registry.validate import parse_server
    from mcpgw.stack import free_ports
    from pluginserver.server import DEFAULT_ROOT

    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "a.yaml").write_text(yaml.safe_dump(orders_doc(1, {"file": str(tmp_path / "t")}, "a")))
    (tmp_path / "t").write_text("t")
    xds, status = free_ports(2)
    control_plane = ControlPlane(
        ControlPlaneOptions(registry_dir=registry, plugins_dir=DEFAULT_ROOT, xds_port=xds, status_port=status)
    )
    await control_plane.start()
    try:
        old = control_plane.store.snapshot
        assert old is not None
        document = orders_doc(1, {"file": str(tmp_path / "t")}, "a") | {"description": "newer"}
        new = RegistrySnapshot(servers=(parse_server(document, "a.yaml"),))

        async def slow_for_the_old_one(snapshot: RegistrySnapshot, policy: CredentialPolicy) -> Any:
            if snapshot is old:
                await asyncio.sleep(0.5)
            return await resolve_off_loop(snapshot, policy)

        monkeypatch.setattr(controlplane_module, "resolve_off_loop", slow_for_the_old_one)
        await asyncio.gather(control_plane.apply(old), control_plane.apply(new))
        assert control_plane.applied_revision == new.revision != old.revision
    finally:
        await control_plane.stop()
