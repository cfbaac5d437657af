"""A real `redis-server` child process for tests, on a free loopback port, with no persistence.

Tests that need Redis fail with an install hint when the binary is missing: they never skip.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from mcpgw.stack import free_port

INSTALL_HINT = "redis-server is not installed: run `make redis` (apt-get install redis-server)"


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _command(port: int, *words: str, timeout: float = 1.0) -> bytes:
    """One inline command to a Redis or sentinel on loopback; the raw reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall((" ".join(words) + "\r\n").encode())
        return sock.recv(65536)


class SentinelSetup:
    """A primary, one replica and three sentinels (quorum 2), each a `redis-server` child process.

    The sentinels mark the primary down after `down_after_ms` without an answer and fail over
    to the replica. Diskless replication starts at once (`repl-diskless-sync-delay 0`), so a
    restarted node is a synced replica again within a second.
    """

    SERVICE = "mymaster"

    def __init__(self, workdir: Path, down_after_ms: int = 1000, persistent: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        self.binary = binary
        self.workdir = workdir
        self.down_after_ms = down_after_ms
        # An append-only file synced on every write: a node stopped and restarted keeps its data.
        self.persistent = persistent
        self.data_ports = [free_port(), free_port()]  # [initial primary, initial replica]
        self.sentinel_ports = [free_port(), free_port(), free_port()]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.SERVICE}/0"

    def _spawn(self, port: int, arguments: list[str]) -> None:
        log = (self.workdir / f"{port}.log").open("ab")
        self.processes[port] = subprocess.Popen(
            [self.binary, *arguments], stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        log.close()

    def start_data(self, port: int, replica_of: int | None = None) -> None:
        arguments = [
            "--bind", "127.0.0.1", "--port", str(port), "--save", "",
            "--appendonly", "yes" if self.persistent else "no", "--appendfsync", "always",
            "--appenddirname", f"aof-{port}", "--dir", str(self.workdir), "--dbfilename", f"dump-{port}.rdb",
            "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if replica_of is not None:
            arguments += ["--replicaof", "127.0.0.1", str(replica_of)]
        self._spawn(port, arguments)
        self._wait(port)

    def _wait(self, port: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _ping(port):
                return
            time.sleep(0.05)
        raise TimeoutError(f"redis-server did not answer on port {port} within {timeout}s")

    def start(self, timeout: float = 20.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        primary, replica = self.data_ports
        self.start_data(primary)
        self.start_data(replica, replica_of=primary)
        for port in self.sentinel_ports:
            config = self.workdir / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.SERVICE} 5000\n"
                f"sentinel parallel-syncs {self.SERVICE} 1\n"
            )
            self._spawn(port, [str(config), "--sentinel"])
        deadline = time.monotonic() + timeout
        # Ready when the replica is in sync and every sentinel knows the replica and the others.
        while time.monotonic() < deadline:
            try:
                synced = b"master_link_status:up" in _command(replica, "INFO", "replication")
                known = all(
                    b"num-other-sentinels\r\n$1\r\n2" in _command(port, "SENTINEL", "MASTER", self.SERVICE)
                    and b"num-slaves\r\n$1\r\n1" in _command(port, "SENTINEL", "MASTER", self.SERVICE)
                    for port in self.sentinel_ports
                )
            except OSError:
                synced = known = False
            if synced and known:
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(
            "the Sentinel setup did not settle (replica synced, sentinels aware of each other)"
        )

    def primary_port(self) -> int | None:
        """The primary's port as the sentinels answer it (the first that answers)."""
        for port in self.sentinel_ports:
            try:
                reply = _command(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.SERVICE)
            except OSError:
                continue
            lines = reply.split(b"\r\n")
            if len(lines) >= 5 and lines[4].isdigit():
                return int(lines[4])
        return None

    def kill(self, port: int, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(port)
        process.send_signal(sig)
        process.wait()

    def role(self, port: int) -> bytes:
        return _command(port, "ROLE")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
