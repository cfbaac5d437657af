"""The plugin folder: `plugins/<name>/<version>/plugin.wasm` with its `plugin.wasm.sha256`.

Operators drop filters into the folder; the catalog verifies each artifact against its
digest file and refuses to serve one that does not match, because Envoy would reject it
after downloading anyway and the operator deserves the error here, by name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

ARTIFACT = "plugin.wasm"
DIGEST = "plugin.wasm.sha256"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PluginError(LookupError):
    """A plugin that is missing or whose digest does not match; the message says which."""


@dataclass(frozen=True)
class Plugin:
    name: str
    version: str
    path: Path
    sha256: str
    size: int

    @property
    def url_path(self) -> str:
        return f"/plugins/{self.name}/{self.version}/{ARTIFACT}"


def _version_key(version: str) -> tuple[tuple[int, str], ...]:
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.\-+]", version))


def scan(root: Path) -> tuple[list[Plugin], list[str]]:
    """Every valid plugin under `root`, and a problem line for every invalid one."""
    plugins: list[Plugin] = []
    problems: list[str] = []
    for artifact in sorted(root.glob(f"*/*/{ARTIFACT}")):
        version_dir = artifact.parent
        try:
            plugins.append(load(version_dir.parent.name, version_dir.name, root))
        except PluginError as error:
            problems.append(str(error))
    return plugins, problems


def load(name: str, version: str, root: Path) -> Plugin:
    path = root / name / version / ARTIFACT
    digest_file = path.with_name(DIGEST)
    if not path.is_file():
        raise PluginError(f"{path}: no such plugin (run `make filters`)")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if digest_file.is_file():
        declared = digest_file.read_text().split()[0] if digest_file.read_text().split() else ""
        if not _SHA256.match(declared):
            raise PluginError(f"{digest_file}: not a sha256 hex digest")
        if declared != actual:
            raise PluginError(f"{path}: sha256 {actual} does not match {digest_file} ({declared})")
    return Plugin(name=name, version=version, path=path, sha256=actual, size=len(data))


def latest(name: str, root: Path) -> Plugin:
    """The highest version of `name`; raises `PluginError` when there is none."""
    versions = (
        [d.name for d in (root / name).iterdir() if (d / ARTIFACT).is_file()]
        if (root / name).is_dir()
        else []
    )
    if not versions:
        raise PluginError(f"{root / name}: no versions of plugin {name!r} (run `make filters`)")
    return load(name, max(versions, key=_version_key), root)
