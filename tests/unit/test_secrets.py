"""Reading `{file:}` and `{env:}` credentials: regular files only, size-capped, off the event loop,
within an allow-list, never mcpgw's own secrets, and one reason for clients whatever went wrong."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mcpgw.registry import secrets
from mcpgw.registry.model import RegistrySnapshot
from mcpgw.registry.reader import Invalid, Problem
from mcpgw.registry.secrets import (
    MAX_CREDENTIAL_BYTES,
    UNAVAILABLE,
    CredentialPolicy,
    resolve,
    resolve_off_loop,
)
from mcpgw.registry.validate import parse_server
from tests.unit.test_registry import minimal


def snapshot_with(credential: dict[str, str] | str) -> RegistrySnapshot:
    document = minimal(
        securitySchemes=[{"id": "t", "type": "http", "scheme": "bearer", "defaultCredential": credential}]
    )
    document["tools"][0]["requestTemplate"]["security"] = {"id": "t"}
    return RegistrySnapshot(servers=(parse_server(document, "reg.yaml"),))


def refusal(credential: dict[str, str], policy: CredentialPolicy | None = None) -> Problem:
    with pytest.raises(Invalid) as error:
        resolve(snapshot_with(credential), policy)
    (problem,) = error.value.problems
    return problem


def logged_reason(caplog: pytest.LogCaptureFixture) -> str:
    [record] = [r for r in caplog.records if r.getMessage() == "credential_unavailable"]
    fields: dict[str, Any] = record.fields  # type: ignore[attr-defined]
    return str(fields["reason"])


def read(credential: dict[str, str], policy: CredentialPolicy | None = None) -> str:
    [value] = resolve(snapshot_with(credential), policy).values()
    return value


GENERIC = Problem("reg.yaml", "securitySchemes[0].defaultCredential", UNAVAILABLE)


def test_a_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    assert read({"file": str(tmp_path / "token")}) == "s3cret"


def test_a_fifo_is_refused_without_being_opened(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    # Opening a FIFO for reading blocks until a writer comes: this returns at once or never.
    assert refusal({"file": str(fifo)}) == GENERIC
    assert time.monotonic() - started < 1
    assert "not a regular file (a FIFO)" in logged_reason(caplog)


@pytest.mark.parametrize(("path", "kind"), [("/dev/zero", "a character device"), ("/", "a directory")])
def test_devices_and_directories_are_refused(path: str, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    assert refusal({"file": path}) == GENERIC
    assert f"not a regular file ({kind})" in logged_reason(caplog)


def test_a_file_larger_than_the_cap_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    exact = tmp_path / "exact"
    exact.write_text("k" * MAX_CREDENTIAL_BYTES)
    assert read({"file": str(exact)}) == "k" * MAX_CREDENTIAL_BYTES
    big = tmp_path / "big"
    big.write_text("k" * (MAX_CREDENTIAL_BYTES + 1))
    assert refusal({"file": str(big)}) == GENERIC
    assert f"larger than {MAX_CREDENTIAL_BYTES} bytes" in logged_reason(caplog)


def test_proc_files_are_refused_even_without_an_allow_list(caplog: pytest.LogCaptureFixture) -> None:
    # /proc/self/environ is a "regular file" holding the control plane's environment.
    assert refusal({"file": "/proc/self/environ"}) == GENERIC
    assert "under /proc" in logged_reason(caplog)


def test_empty_and_non_utf8_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    assert refusal({"file": str(tmp_path / "empty")}) == GENERIC
    assert refusal({"file": str(tmp_path / "binary")}) == GENERIC


def test_the_allow_list_admits_files_under_its_directories_only(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "creds", tmp_path / "elsewhere"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "key").write_text("inside")
    (outside / "key").write_text("outside")
    policy = CredentialPolicy.allow_list([allowed], [])
    assert read({"file": str(allowed / "key")}, policy) == "inside"
    assert refusal({"file": str(outside / "key")}, policy) == GENERIC
    # Real paths count: neither `..` nor a symlink leaves the directory...
    assert refusal({"file": f"{allowed}/../elsewhere/key"}, policy) == GENERIC
    (allowed / "link").symlink_to(outside / "key")
    assert refusal({"file": str(allowed / "link")}, policy) == GENERIC
    # ...while symlinks inside it (a Kubernetes secret volume: key -> ..data/key) are fine.
    (allowed / "..data").mkdir()
    (allowed / "..data" / "token").write_text("mounted")
    (allowed / "token").symlink_to("..data/token")
    assert read({"file": str(allowed / "token")}, policy) == "mounted"


def test_missing_and_not_allowed_files_look_the_same_to_clients(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    allowed = tmp_path / "creds"
    allowed.mkdir()
    (tmp_path / "exists").write_text("x")
    policy = CredentialPolicy.allow_list([allowed], [])
    missing = refusal({"file": str(allowed / "missing")}, policy)
    assert "No such file or directory" in logged_reason(caplog)
    caplog.clear()
    refused = refusal({"file": str(tmp_path / "exists")}, policy)
    assert "outside the credential directories" in logged_reason(caplog)
    assert missing == refused == GENERIC


def test_the_allow_list_admits_matching_variables_only(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MCPGW_CRED_PETSTORE", "pet")
    monkeypatch.setenv("HOME_SECRET", "home")
    policy = CredentialPolicy.allow_list([], None)
    assert read({"env": "MCPGW_CRED_PETSTORE"}, policy) == "pet"
    assert refusal({"env": "HOME_SECRET"}, policy) == GENERIC
    assert "matches none of the allowed names (MCPGW_CRED_*" in logged_reason(caplog)
    assert read({"env": "HOME_SECRET"}, CredentialPolicy.allow_list([], ["HOME_*"])) == "home"
    assert refusal({"env": "NOT_SET_ANYWHERE"}) == GENERIC


@pytest.mark.parametrize("name", ["MCPGW_ADMIN_TOKEN", "MCPGW_SESSION_KEY", "MCPGW_REDIS_PASSWORD"])
def test_mcpgw_own_variables_are_never_credentials(
    name: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(name, "own")
    assert refusal({"env": name}, CredentialPolicy.allow_list([], ["*"])) == GENERIC
    assert refusal({"env": name}) == GENERIC
    assert all("mcpgw's own" in str(r.fields["reason"]) for r in caplog.records)  # type: ignore[attr-defined]


def test_mcpgw_own_files_are_refused_even_inside_an_allowed_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = tmp_path / "registry-session-keys.json"
    keys.write_text('{"keys": []}')
    (tmp_path / "registry-session-keys.json.lock").write_text("")
    (tmp_path / "other").write_text("fine")
    policy = CredentialPolicy(dirs=(tmp_path,), owned=(keys,))
    assert read({"file": str(tmp_path / "other")}, policy) == "fine"
    assert refusal({"file": str(keys)}, policy) == GENERIC
    assert "mcpgw's own secret" in logged_reason(caplog)
    # Another name for the same file is the same file.
    os.link(keys, tmp_path / "alias")
    assert refusal({"file": str(tmp_path / "alias")}, policy) == GENERIC
    (tmp_path / "sym").symlink_to(keys)
    assert refusal({"file": str(tmp_path / "sym")}, policy) == GENERIC


async def test_files_are_read_off_the_event_loop_within_a_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A read that hangs (a dead network filesystem) costs a rejection, not the event loop."""
    release = threading.Event()
    real_read = secrets._read_file

    def hung_read(ref: str, policy: CredentialPolicy) -> str:
        release.wait(10)
        return real_read(ref, policy)

    monkeypatch.setattr(secrets, "_read_file", hung_read)
    (tmp_path / "token").write_text("t")
    snapshot = snapshot_with({"file": str(tmp_path / "token")})
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    try:
        with pytest.raises(Invalid) as error:
            await resolve_off_loop(snapshot, CredentialPolicy(timeout_s=0.3))
    finally:
        task.cancel()
        release.set()
    assert 0.3 <= time.monotonic() - started < 1.5
    assert ticks >= 10, "the event loop was blocked while the file was read"
    assert error.value.problems == [GENERIC]
    assert "not read within 0.3 s" in logged_reason(caplog)


async def test_hung_reader_threads_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    monkeypatch.setattr(secrets, "_read_file", lambda ref, policy: release.wait(10) and "late")
    snapshot = snapshot_with({"file": str(tmp_path / "token")})
    before = threading.active_count()
    try:
        for _ in range(secrets.MAX_READER_THREADS + 3):
            with pytest.raises(Invalid):
                await resolve_off_loop(snapshot, CredentialPolicy(timeout_s=0.05))
        assert threading.active_count() - before <= secrets.MAX_READER_THREADS
    finally:
        release.set()
    # Once the hung reads return, reading works again.
    (tmp_path / "token").write_text("t")
    monkeypatch.undo()
    for _ in range(100):
        if threading.active_count() <= before:
            break
        await asyncio.sleep(0.02)
    assert list((await resolve_off_loop(snapshot)).values()) == ["t"]


async def test_each_reference_is_read_once_per_resolution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("t")
    calls: list[str] = []
    real_read = secrets._read_file

    def counted(ref: str, policy: CredentialPolicy) -> str:
        calls.append(ref)
        return real_read(ref, policy)

    monkeypatch.setattr(secrets, "_read_file", counted)
    reference = {"file": str(tmp_path / "token")}
    document = minimal(
        securitySchemes=[
            {"id": scheme, "type": "http", "scheme": "bearer", "defaultCredential": reference}
            for scheme in ("a", "b")
        ]
    )
    snapshot = RegistrySnapshot(servers=(parse_server(document, "reg.yaml"),))
    values = await resolve_off_loop(snapshot)
    assert len(values) == 2 and set(values.values()) == {"t"}
    assert calls == [str(tmp_path / "token")]


def test_the_value_never_reaches_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret_file = tmp_path / "token"
    secret_file.write_text("v3ry-s3cret\n")
    resolve(snapshot_with({"file": str(secret_file)}))
    secret_file.write_text("v3ry-s3cret\nsecond line")
    refusal({"file": str(secret_file)})
    (tmp_path / "big").write_text("v3ry-s3cret" * 10_000)
    refusal({"file": str(tmp_path / "big")})
    assert "v3ry-s3cret" not in caplog.text


@pytest.mark.parametrize("command", ["serve", "up"])
def test_the_cli_turns_the_allow_list_on_by_default(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from mcpgw.cli import _credential_policy, _parser

    def policy(*argv: str) -> CredentialPolicy:
        return _credential_policy(_parser().parse_args([command, "-f", "registry", *argv]))

    monkeypatch.delenv("MCPGW_CREDENTIAL_DIRS", raising=False)
    monkeypatch.delenv("MCPGW_CREDENTIAL_ENV", raising=False)
    assert policy() == CredentialPolicy(dirs=(Path("/run/secrets"),), env=("MCPGW_CRED_*",))
    monkeypatch.setenv("MCPGW_CREDENTIAL_DIRS", f"/a{os.pathsep}/b")
    monkeypatch.setenv("MCPGW_CREDENTIAL_ENV", "API_*, VENDOR_KEY")
    assert policy() == CredentialPolicy(dirs=(Path("/a"), Path("/b")), env=("API_*", "VENDOR_KEY"))
    # Flags win over the variables; --any-credential drops the allow-list, not the other rules.
    assert policy("--credential-dir", "/c", "--credential-env", "X_*") == CredentialPolicy(
        dirs=(Path("/c"),), env=("X_*",)
    )
    assert policy("--any-credential") == CredentialPolicy()
