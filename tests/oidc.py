"""A real OAuth 2.1 authorization server for the tests: `oidc-provider` (a certified OpenID
provider, from npm) run by `tests/oidc_server.mjs` on a free 127.0.0.1 port.

`make oidc-provider` (a prerequisite of `make test`) installs the pinned package into
`build/oidc-provider/` (git-ignored) next to a stamp naming the version; `ensure()` does the same
when a test needs it and it is missing. Only `node` and `npm` must be on PATH.

    python -m tests.oidc     # install if needed, print the path (what `make oidc-provider` runs)

`AuthorizationServer` starts one (client-credentials clients, resource indicators issuing JWT
access tokens whose `aud` is the requested resource, key rotation and test-only signing on
`/admin/*`), waits for its discovery document and stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from tests.inspector import InspectorUnavailable, _locked, _npm_install

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTALL_DIR = REPO_ROOT / "build" / "oidc-provider"
PACKAGE = "oidc-provider"
VERSION = "9.13.3"
INSTALL_COMMAND = "make oidc-provider"
SCRIPT = Path(__file__).with_name("oidc_server.mjs")
START_TIMEOUT = 30.0


class OidcUnavailable(RuntimeError):
    """oidc-provider is not installed and could not be; the message says what to do."""


def module_dir(root: Path = INSTALL_DIR) -> Path:
    return root / "package" / "node_modules" / PACKAGE


def installed(root: Path = INSTALL_DIR) -> Path | None:
    try:
        recorded = json.loads((root / "installed.json").read_text())
    except (OSError, ValueError):
        return None
    if (
        recorded != {"package": f"{PACKAGE}@{VERSION}"}
        or not (module_dir(root) / "lib" / "index.js").is_file()
    ):
        return None
    return module_dir(root)


def ensure(root: Path = INSTALL_DIR) -> Path:
    """The installed package's directory, installing it first when missing."""
    found = installed(root)
    if found is not None:
        return found
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):
        return installed(root) or _install(root)


def _install(root: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise OidcUnavailable(
            f"node and npm are needed to install {PACKAGE} (Debian/Ubuntu: apt-get install npm), "
            f"then run `{INSTALL_COMMAND}`"
        )
    (root / "installed.json").unlink(missing_ok=True)
    try:
        # The Inspector's installer: its own project under root/package, from scratch.
        _npm_install(npm, root / "package", f"{PACKAGE}@{VERSION}", dict(os.environ))
    except InspectorUnavailable as error:
        raise OidcUnavailable(
            f"cannot install {PACKAGE}@{VERSION} from npm (the JWT/OAuth tests need it; point npm at a "
            f"mirror with npm_config_registry=URL, then run `{INSTALL_COMMAND}`):\n{error}"
        ) from None
    (root / "installed.json").write_text(json.dumps({"package": f"{PACKAGE}@{VERSION}"}) + "\n")
    return module_dir(root)


@dataclass(frozen=True)
class Client:
    id: str
    secret: str
    # Space-separated scopes the client may ask for; None: every scope of the server.
    scope: str | None = None


class AuthorizationServer:
    """One oidc-provider process; a context manager (`with AuthorizationServer(...) as a:`)."""

    def __init__(
        self,
        clients: Sequence[Client],
        scopes: Sequence[str],
        ttl: int = 600,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        """`tls`: (certificate, key, CA) files: serve HTTPS with that certificate (issued for
        127.0.0.1), and trust the CA when talking to it."""
        self.clients = list(clients)
        self.tls = tls
        self._verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(tls[2])) if tls is not None else True
        )
        self.scopes = list(scopes)
        self.ttl = ttl
        self.issuer = ""
        self._process: subprocess.Popen[str] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> AuthorizationServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        package = ensure()
        self._dir = tempfile.TemporaryDirectory(prefix="mcpgw-oidc-")
        config = Path(self._dir.name) / "config.json"
        config.write_text(
            json.dumps(
                {
                    "port": 0,
                    "clients": [
                        {
                            "id": c.id,
                            "secret": c.secret,
                            **({"scope": c.scope} if c.scope is not None else {}),
                        }
                        for c in self.clients
                    ],
                    "scopes": self.scopes,
                    "ttl": self.ttl,
                    **({"tls": {"cert": str(self.tls[0]), "key": str(self.tls[1])}} if self.tls else {}),
                }
            )
        )
        self._stderr = open(Path(self._dir.name) / "stderr.log", "w+")
        self._process = subprocess.Popen(
            ["node", str(SCRIPT), str(package), str(config)],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            self._stderr.seek(0)
            raise OidcUnavailable(f"oidc_server.mjs exited before listening:\n{self._stderr.read()[-4000:]}")
        self.issuer = json.loads(line)["issuer"]
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if (
                    httpx.get(
                        f"{self.issuer}/.well-known/openid-configuration", timeout=2, verify=self._verify
                    ).status_code
                    == 200
                ):
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise OidcUnavailable(
                    f"{self.issuer} served no discovery document within {START_TIMEOUT:.0f}s"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
            self._process = None
            self._stderr.close()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks"

    def token(self, client: Client, resource: str, scope: str | None = None) -> str:
        """A client-credentials access token (a JWT whose `aud` is `resource`)."""
        data = {"grant_type": "client_credentials", "resource": resource}
        if scope is not None:
            data["scope"] = scope
        answer = httpx.post(
            f"{self.issuer}/token",
            data=data,
            auth=(client.id, client.secret),
            timeout=10,
            verify=self._verify,
        )
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    def sign(self, claims: dict[str, object], header: dict[str, object] | None = None) -> str:
        """`claims` signed with the server's current key (for expired, wrong-issuer… tokens)."""
        answer = httpx.post(
            f"{self.issuer}/admin/sign",
            json={"claims": claims, "header": header or {}},
            timeout=10,
            verify=self._verify,
        )
        answer.raise_for_status()
        return str(answer.json()["token"])

    def delay_jwks(self, ms: int) -> None:
        """The JWKS answers `ms` milliseconds late from now on (0: at once)."""
        answer = httpx.post(
            f"{self.issuer}/admin/jwks-delay", json={"ms": ms}, timeout=10, verify=self._verify
        )
        answer.raise_for_status()

    def rotate(self) -> str:
        """A new signing key (the JWKS keeps the previous ones); returns its `kid`."""
        answer = httpx.post(f"{self.issuer}/admin/rotate", timeout=10, verify=self._verify)
        answer.raise_for_status()
        return str(answer.json()["kid"])


def main() -> int:
    try:
        path = ensure()
    except (OidcUnavailable, InspectorUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{PACKAGE} {VERSION}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
