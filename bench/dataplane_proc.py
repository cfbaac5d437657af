"""Process helpers for the data-plane benchmark: free ports, nginx, wrk, RSS, tool checks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataplane_configs import ACCEPT, INIT_BODY, WRK_LUA, nginx_conf


def ensure_tool(binary: str, package: str) -> str:
    """The path of `binary`, installing the Debian `package` with apt-get when it is missing."""
    found = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"bench: installing {package} (apt-get)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        ok = (
            subprocess.run(
                ["apt-get", "install", "-y", "-q", package], env=env, capture_output=True
            ).returncode
            == 0
        )
        if not ok:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300)
            subprocess.run(
                ["apt-get", "install", "-y", "-q", package], env=env, capture_output=True, timeout=600
            )
        found = shutil.which(binary) or (
            f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None
        )
    if not found:
        raise SystemExit(
            f"bench-dataplane needs `{binary}`: install it with "
            f"`apt-get install -y {package}` (as root) and rerun"
        )
    return found


def first_line(*cmd: str) -> str:
    """The first line a command prints (stdout, else stderr): a tool's version."""
    r = subprocess.run(cmd, capture_output=True, text=True)
    text = (r.stdout or r.stderr).strip()
    return text.splitlines()[0] if text else "?"


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, every thread (ended ones too), from /proc/<pid>/stat.

    Per request it is a steadier cost figure than req/s on a shared VM: time stolen by
    neighbours or spent waiting for the load generator does not count.
    """
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin_threads(pid: int, cpus: Iterable[int]) -> int:
    """Pin every thread of `pid` to `cpus`; returns how many were pinned.

    sched_setaffinity acts on one thread, so each task is pinned; threads the process starts
    later inherit the mask of the thread that starts them, which is then pinned too.
    """
    pinned = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            os.sched_setaffinity(int(task), cpus)
            pinned += 1
    return pinned


def process_tree(pid: int) -> list[int]:
    """`pid` and every descendant alive now (from /proc/*/stat's parent pid)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, ()))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process tree: utime + stime + cutime + cstime of every live member. A worker
    that exits (gunicorn's max-requests restart) moves its time into its parent's cutime/cstime
    when reaped, so the sum stays whole across restarts."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / os.sysconf("SC_CLK_TCK")


def tree_rss_kib(pid: int) -> int:
    total = 0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def pin_tree(pid: int, cpus: Iterable[int] | None) -> None:
    """Pin every thread of `pid` and of its descendants (None: leave them unpinned)."""
    if cpus is None:
        return
    for member in process_tree(pid):
        try:
            pin_threads(member, cpus)
        except (FileNotFoundError, ProcessLookupError):
            continue


def thread_cpus(pid: int) -> list[int]:
    """The CPUs any thread of `pid` may run on (to show the placement held)."""
    allowed: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            allowed |= os.sched_getaffinity(int(task))
    return sorted(allowed)


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode())


def http_post(
    url: str, body: str, timeout: float = 5.0, headers: Mapping[str, str] | None = None
) -> tuple[int, str]:
    status, text, _ = http_exchange(url, body, timeout, headers)
    return status, text


def http_exchange(
    url: str, body: str, timeout: float = 5.0, headers: Mapping[str, str] | None = None
) -> tuple[int, str, Mapping[str, str]]:
    """POST `body`; the status, the body and the response headers (names lower-cased)."""
    request = urllib.request.Request(
        url,
        data=body.encode(),
        method="POST",
        headers={"content-type": "application/json", "accept": ACCEPT, **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = {name.lower(): value for name, value in response.headers.items()}
        return int(response.status), str(response.read().decode()), answer


def open_session(url: str, auth: Mapping[str, str] | None = None) -> dict[str, str]:
    """initialize + notifications/initialized: the headers every later request of the session sends.

    The gateway refuses requests without its signed Mcp-Session-Id, so measured runs carry one
    (its HMAC check is part of what is measured). `auth`: headers every request carries (a peer's
    bearer token). An answer sent as SSE (a server's default) is read from its `data:` line.
    """
    status, text, headers = http_exchange(url, INIT_BODY, headers=auth)
    if status != 200:
        raise RuntimeError(f"initialize at {url}: HTTP {status}: {text}")
    if text.lstrip().startswith(("event:", "data:", "id:")):
        text = next(ln[5:] for ln in text.splitlines() if ln.startswith("data:"))
    session = {**(auth or {}), "mcp-protocol-version": json.loads(text)["result"]["protocolVersion"]}
    if "mcp-session-id" in headers:
        session["mcp-session-id"] = headers["mcp-session-id"]
    status, text, _ = http_exchange(
        url, '{"jsonrpc":"2.0","method":"notifications/initialized"}', headers=session
    )
    if status != 202:
        raise RuntimeError(f"notifications/initialized at {url}: HTTP {status}: {text}")
    return session


class Nginx:
    """The backend: Debian's nginx, one worker, answering the pet from memory."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = ensure_tool("nginx", "nginx-light")
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "nginx.conf"
        conf.write_text(nginx_conf(self.workdir, self.port))
        log = (self.workdir / "nginx.out").open("ab")
        self.process = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(self.workdir)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_http(f"http://127.0.0.1:{self.port}/v1/pets/1", self.process)

    def stop(self) -> None:
        stop_process(self.process)


def wait_http(url: str, process: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {process.returncode}")
        with contextlib.suppress(OSError):
            http_get(url, timeout=1.0)
            return
        time.sleep(0.1)
    raise TimeoutError(f"{url} not answering after {timeout:.0f}s")


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process group we started, then SIGKILL after 5 s."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


@dataclass(frozen=True)
class LoadSpec:
    threads: int
    connections: int
    duration_s: float
    warmup_s: float


async def wrk(
    url: str,
    method: str,
    body: str,
    spec: LoadSpec,
    workdir: Path,
    *,
    warmup: bool = False,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One wrk run; returns requests/s, latency percentiles (µs) and error counts."""
    binary = ensure_tool("wrk", "wrk")
    script = workdir / "bench.lua"
    if not script.exists():
        script.write_text(WRK_LUA)
    duration = spec.warmup_s if warmup else spec.duration_s
    extra = "".join(f"{name}: {value}\n" for name, value in (headers or {}).items())
    env = {**os.environ, "BENCH_BODY": body, "BENCH_METHOD": method, "BENCH_HEADERS": extra}
    process = await asyncio.create_subprocess_exec(
        binary,
        f"-t{spec.threads}",
        f"-c{spec.connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), duration + 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = out.decode()
    line = next((ln for ln in text.splitlines() if ln.startswith("BENCHJSON ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {text}\n{err.decode()}")
    data: dict[str, Any] = json.loads(line.removeprefix("BENCHJSON "))
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    return data
