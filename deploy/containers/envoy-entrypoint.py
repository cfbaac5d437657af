"""The Envoy image's PID 1: render the bootstrap, run Envoy, drain it on SIGTERM.

The bootstrap is `$MCPGW_BOOTSTRAP_FILE` when that file exists (a mounted one), else
`mcpgw bootstrap` rendered from environment variables into /tmp (the only writable place with a
read-only root filesystem). Envoy stops at once on SIGTERM; a pod being deleted should first stop
taking new work, so on SIGTERM (or SIGINT) this fails Envoy's health check (`/ready` on the stats
listener answers 503 from then on), drains the listeners gracefully for `$MCPGW_DRAIN_SECONDS`, then
sends Envoy SIGTERM and exits with its status. deploy/README.md lists the variables.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

TRUE = {"1", "true", "yes", "on"}


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def bootstrap_command() -> list[str]:
    command = ["mcpgw", "bootstrap", "--node-id", env("MCPGW_NODE_ID", socket.gethostname())]
    command += ["--node-cluster", env("MCPGW_NODE_CLUSTER", "mcpgw")]
    for address in env("MCPGW_XDS", "127.0.0.1:18000").split(","):
        if address.strip():
            command += ["--xds", address.strip()]
    command += ["--broker", env("MCPGW_BROKER", "127.0.0.1:18003")]
    command += ["--stats", env("MCPGW_STATS", "0.0.0.0:9902")]
    command += ["--envoy-admin", env("MCPGW_ENVOY_ADMIN", "127.0.0.1:9901")]
    if env("MCPGW_XDS_DELTA", "").lower() in TRUE:
        command.append("--xds-delta")
    return command + shlex.split(env("MCPGW_BOOTSTRAP_ARGS", ""))


def bootstrap() -> Path:
    mounted = Path(env("MCPGW_BOOTSTRAP_FILE", "/etc/mcpgw/envoy/bootstrap.yaml"))
    if mounted.is_file():
        return mounted
    rendered = subprocess.run(bootstrap_command(), capture_output=True, text=True)
    if rendered.returncode != 0:
        sys.stderr.write(rendered.stderr)
        sys.exit(rendered.returncode)
    path = Path(env("TMPDIR", "/tmp")) / "mcpgw-envoy-bootstrap.yaml"
    path.write_text(rendered.stdout, encoding="utf-8")
    return path


def admin_post(admin: str, path: str) -> None:
    """POST to Envoy's admin (loopback only; best effort: Envoy may be gone already)."""
    try:
        urllib.request.urlopen(urllib.request.Request(f"http://{admin}{path}", method="POST"), timeout=2).close()
    except OSError as error:
        print(f"envoy-entrypoint: POST {path}: {error}", file=sys.stderr, flush=True)


def main() -> int:
    config = bootstrap()
    command = ["envoy", "-c", str(config), "--disable-hot-restart", "-l", env("ENVOY_LOG_LEVEL", "info")]
    command += shlex.split(env("ENVOY_ARGS", ""))
    envoy = subprocess.Popen(command)
    drain_s = float(env("MCPGW_DRAIN_SECONDS", "5"))
    admin = env("MCPGW_ENVOY_ADMIN", "127.0.0.1:9901")
    stopping = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        if stopping.is_set():  # a second signal: no more patience
            envoy.send_signal(signal.SIGKILL)
            return
        stopping.set()
        print(f"envoy-entrypoint: signal {signum}: draining for {drain_s:g} s", file=sys.stderr, flush=True)

        def drain() -> None:
            admin_post(admin, "/healthcheck/fail")
            admin_post(admin, "/drain_listeners?graceful")
            try:
                envoy.wait(timeout=drain_s)
            except subprocess.TimeoutExpired:
                envoy.send_signal(signal.SIGTERM)

        threading.Thread(target=drain, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = envoy.wait()
    return 0 if stopping.is_set() and code in (0, -signal.SIGTERM) else code


if __name__ == "__main__":
    sys.exit(main())
