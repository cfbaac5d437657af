"""The peer gateways of `bench/peers.py`, each installed into its own venv and started for a run.

* **ContextForge** (PyPI `mcp-contextforge-gateway`): its production server as its
  `run-gunicorn.sh` starts it (gunicorn, Uvicorn workers, `--preload`, access log off, the same
  `post_fork` hook as its `gunicorn.config.py`), SQLite, its defaults otherwise; the benchmark
  changes only `RATE_LIMITING_ENABLED=false` (100 MCP calls per minute by default) and
  `SSRF_ALLOW_LOCALHOST=true` (the backend is on 127.0.0.1). Clients send a JWT signed with its
  `JWT_SECRET_KEY` for its bootstrapped platform admin (a user in its database), made with its own
  `mcpgateway.utils.create_jwt_token`; the REST tool and a virtual server holding it are registered
  through its REST API (`POST /tools`, `POST /servers`), and clients use `/servers/<id>/mcp`.
* **FastMCP** (PyPI `fastmcp`): `FastMCP.from_openapi` over an OpenAPI document of the same REST
  API (`bench/peers_fastmcp.py`), Streamable HTTP with FastMCP's defaults (stateful sessions,
  SSE answers), one uvicorn process.

Neither is installed into the project venv: each gets `.cache/peers/<package>-<version>/`
(created once, a stamp records the install time), so their dependencies never touch mcpgw's.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataplane_configs import INPUT_SCHEMA, PET_JSON, TOOL_DESCRIPTION, TOOL_NAME
from dataplane_proc import http_post, stop_process

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = REPO / ".cache" / "peers"

# The newest each package index offers here when the benchmark was written (pip index versions);
# the run records what it used. Override with --contextforge-version / --fastmcp-version.
CONTEXTFORGE_VERSION = "1.0.7.post20260921"
FASTMCP_VERSION = "4.2.3"
CONTEXTFORGE_USER = "admin@example.com"
# ContextForge's run-gunicorn.sh: GUNICORN_WORKERS "auto" = min(2 * CPUs + 1, 16), CPUs from
# `nproc`, which counts the CPUs the process may run on (here: the tested CPU only).
GUNICORN_AUTO_CAP = 16


@dataclass(frozen=True)
class Venv:
    package: str
    version: str
    python: Path
    installed: dict[str, Any]  # the stamp: when, seconds, pip's words

    def version_of(self, distribution: str) -> str:
        out = subprocess.run(
            [str(self.python), "-c", f"import importlib.metadata as m; print(m.version({distribution!r}))"],
            capture_output=True,
            text=True,
        )
        return out.stdout.strip() or "?"


def ensure_venv(package: str, version: str, cache: Path = CACHE) -> Venv:
    """`package==version` in its own venv under .cache/peers/ (installed once; the stamp keeps how
    long the install took, so the results and the CI decision can cite it)."""
    venv = cache / f"{package}-{version}"
    stamp = venv / ".installed.json"
    python = venv / "bin" / "python"
    if stamp.is_file() and python.exists():
        return Venv(package, version, python, {**json.loads(stamp.read_text()), "cached": True})
    if venv.exists():  # an interrupted install: start again
        shutil.rmtree(venv)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"bench: installing {package}=={version} into {venv} (once)", flush=True)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [
            str(python),
            *("-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{package}=={version}"),
        ],
        capture_output=True,
        text=True,
    )
    if pip.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        tail = "\n".join((pip.stdout + pip.stderr).splitlines()[-20:])
        raise SystemExit(f"bench: pip install {package}=={version} failed:\n{tail}")
    record = {
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "install_seconds": round(time.monotonic() - started, 1),
        "loadavg_at_install": Path("/proc/loadavg").read_text().split()[:3],
    }
    stamp.write_text(json.dumps(record) + "\n")
    return Venv(package, version, python, {**record, "cached": False})


def _api(url: str, token: str, body: Mapping[str, Any] | None = None, timeout: float = 30.0) -> Any:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _wait_health(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


# ContextForge's gunicorn.config.py hooks that matter without TLS: with --preload every worker
# must drop the master's SQLAlchemy pool and Redis client (its post_fork does exactly this).
GUNICORN_CONF = '''"""From ContextForge's gunicorn.config.py (TLS parts left out: plain HTTP)."""
loglevel = "info"
reuse_port = True


def post_fork(server, worker):
    try:
        from mcpgateway.db import engine

        engine.dispose(close=False)
    except Exception as e:  # noqa: BLE001 - as upstream: warn, keep the worker
        server.log.warning("Failed to reset SQLAlchemy engine pool: %s", e)
    try:
        from mcpgateway.utils.redis_client import _reset_client

        _reset_client()
    except ImportError:
        pass
'''


def pinned(command: list[str], cpus: frozenset[int] | None) -> list[str]:
    """`command` started on `cpus` from its first instruction: a shim sets the affinity, then
    execs it, so every process it forks (gunicorn's workers, again after a max-requests restart)
    inherits it. (Not `preexec_fn`: the bench process runs threads, and forking then is unsafe.)"""
    if cpus is None:
        return command
    shim = (
        "import os, sys; os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(',')}); "
        "os.execv(sys.argv[2], sys.argv[2:])"
    )
    return [sys.executable, "-c", shim, ",".join(str(c) for c in sorted(cpus)), *command]


@dataclass
class ContextForge:
    """One ContextForge gateway: gunicorn master + workers, SQLite in `workdir`."""

    venv: Venv
    workdir: Path
    port: int
    backend_port: int
    cpus: frozenset[int] | None  # where its processes run (None: not pinned)
    skip_ssl_verify: bool = False
    process: subprocess.Popen[bytes] | None = None
    token: str = ""
    mcp_url: str = ""
    tool_name: str = ""
    workers: int = 0
    env: dict[str, str] = field(default_factory=dict)

    def settings(self) -> dict[str, str]:
        """Every environment variable the benchmark sets (secrets shown as <random>)."""
        return {
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "DATABASE_URL": "sqlite:///./mcp.db (its default, in the run's work dir)",
            "JWT_SECRET_KEY": "<random, 64 hex> (it refuses secrets under 32 characters)",
            "AUTH_ENCRYPTION_SECRET": "<random, 64 hex>",
            "PLATFORM_ADMIN_EMAIL": CONTEXTFORGE_USER,
            "PLATFORM_ADMIN_PASSWORD": "<random> (not its published default)",
            "BASIC_AUTH_PASSWORD": "<random> (idem; API basic auth stays off, its default)",
            "RATE_LIMITING_ENABLED": "false (default true: 100 MCP calls per minute)",
            "SSRF_ALLOW_LOCALHOST": "true (default false: the backend is on 127.0.0.1)",
            "SKIP_SSL_VERIFY": "true" if self.skip_ssl_verify else "not set (default false)",
        }

    def start(self, timeout: float = 180.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "gunicorn_conf.py"
        conf.write_text(GUNICORN_CONF)
        secret = secrets.token_hex(32)
        password = f"Bench-{secrets.token_hex(8)}-A1!"
        self.env = {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR")},
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "DATABASE_URL": "sqlite:///./mcp.db",
            "JWT_SECRET_KEY": secret,
            "AUTH_ENCRYPTION_SECRET": secrets.token_hex(32),
            "PLATFORM_ADMIN_EMAIL": CONTEXTFORGE_USER,
            "PLATFORM_ADMIN_PASSWORD": password,
            "BASIC_AUTH_PASSWORD": f"Basic-{secrets.token_hex(8)}-B2!",
            "RATE_LIMITING_ENABLED": "false",
            "SSRF_ALLOW_LOCALHOST": "true",
        }
        if self.skip_ssl_verify:
            self.env["SKIP_SSL_VERIFY"] = "true"
        ncpu = len(self.cpus) if self.cpus is not None else len(os.sched_getaffinity(0))
        self.workers = min(2 * ncpu + 1, GUNICORN_AUTO_CAP)
        bindir = self.venv.python.parent
        command = [
            str(bindir / "gunicorn"),
            *("-c", str(conf)),
            *("--worker-class", "uvicorn.workers.UvicornWorker"),
            *("--workers", str(self.workers)),
            *("--timeout", "600", "--max-requests", "100000", "--max-requests-jitter", "100"),
            *("--access-logfile", "/dev/null", "--error-logfile", "-", "--forwarded-allow-ips=*"),
            "--preload",
            *("--bind", f"127.0.0.1:{self.port}"),
            "mcpgateway.main:app",
        ]
        log = self.workdir / "contextforge.log"
        self.process = subprocess.Popen(
            pinned(command, self.cpus),
            cwd=self.workdir,
            env={**self.env, "PATH": f"{bindir}:{self.env.get('PATH', '')}"},
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_health(f"http://127.0.0.1:{self.port}/health", self.process, log, timeout)
        self.token = self.make_token(secret)
        self.register()

    def make_token(self, secret: str) -> str:
        """Its own token tool, for its bootstrapped admin (in its database); valid 24 h (the
        default 20 min could end during a long run; it requires an expiry and a jti)."""
        out = subprocess.run(
            [
                *(str(self.venv.python), "-m", "mcpgateway.utils.create_jwt_token"),
                *("--username", CONTEXTFORGE_USER, "--exp", "1440", "--secret", secret),
            ],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
        if not lines or lines[-1].count(".") != 2:
            raise RuntimeError(f"create_jwt_token printed no token: {out.stdout[-500:]} {out.stderr[-500:]}")
        return lines[-1]

    def register(self) -> None:
        """The REST tool, then a virtual server holding it, through its REST API."""
        base = f"http://127.0.0.1:{self.port}"
        tool = _api(
            f"{base}/tools",
            self.token,
            {
                "tool": {
                    "name": TOOL_NAME,
                    "url": f"http://127.0.0.1:{self.backend_port}/v1/pets/{{id}}",
                    "description": TOOL_DESCRIPTION,
                    "integration_type": "REST",
                    "request_type": "GET",
                    "input_schema": INPUT_SCHEMA,
                }
            },
        )
        self.tool_name = tool["name"]  # its normalized name (getPet -> getpet)
        server = _api(
            f"{base}/servers",
            self.token,
            {"server": {"name": "pets", "description": "bench", "associated_tools": [tool["id"]]}},
        )
        self.mcp_url = f"{base}/servers/{server['id']}/mcp"

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def stop(self) -> None:
        stop_process(self.process)


def petstore_openapi(backend_port: int) -> dict[str, Any]:
    """The same REST API as every scenario's backend, as OpenAPI 3: one operation, `getPet`."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "pets", "version": "1.0.0"},
        "servers": [{"url": f"http://127.0.0.1:{backend_port}"}],
        "paths": {
            "/v1/pets/{id}": {
                "get": {
                    "operationId": TOOL_NAME,
                    "description": TOOL_DESCRIPTION,
                    "parameters": [
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "description": INPUT_SCHEMA["properties"]["id"]["description"],  # type: ignore[index]
                            "schema": {"type": "integer"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The pet.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            k: {"type": _json_type(v)}
                                            for k, v in json.loads(PET_JSON).items()
                                        },
                                    }
                                }
                            },
                        }
                    },
                }
            }
        },
    }


def _json_type(value: object) -> str:
    return "integer" if isinstance(value, int) else "string"


@dataclass
class FastMcpServer:
    """`FastMCP.from_openapi` served over Streamable HTTP by `bench/peers_fastmcp.py`."""

    venv: Venv
    workdir: Path
    port: int
    backend_port: int
    cpus: frozenset[int] | None
    process: subprocess.Popen[bytes] | None = None

    @property
    def mcp_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self, timeout: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        spec = self.workdir / "openapi.json"
        spec.write_text(json.dumps(petstore_openapi(self.backend_port), indent=2))
        log = self.workdir / "fastmcp.log"
        command = [str(self.venv.python), str(HERE / "peers_fastmcp.py")]
        self.process = subprocess.Popen(
            pinned([*command, "--port", str(self.port), "--openapi", str(spec)], self.cpus),
            cwd=self.workdir,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"FastMCP server exited: {log.read_text()[-3000:]}")
            try:
                http_post(self.mcp_url, '{"jsonrpc":"2.0","id":1,"method":"ping"}', timeout=2)
                return
            except urllib.error.HTTPError:
                return  # any HTTP answer (400 without a session) means it is up
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"FastMCP server not answering after {timeout:.0f} s: {log.read_text()[-3000:]}")

    def stop(self) -> None:
        stop_process(self.process)
