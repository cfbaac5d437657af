"""Where the files mcpgw ships with live: Envoy bootstrap templates, the demo registry, the plugins.

In a checkout (and the editable install `make install` makes) they are the repository's own
folders, laid out as DESIGN.md fixes: `envoy/`, `examples/registry/`, `plugin-server/plugins/`
(built there by `make filters`). A wheel cannot reach the repository, so its build (`setup.py`)
copies them into the package, under `mcpgw/_bundled/` (`envoy/`, `demo-registry/`, `plugins/`,
the plugins built during the wheel build). This module is the one place that knows both: every
default path of mcpgw comes from here, and nothing else looks outside the package.

The wheel is installed as files (never zipped), so `importlib.resources` gives real paths, which
the plugin server and Envoy's bootstrap rendering need.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = [
    "BUNDLE_DIR",
    "BundleMissing",
    "bootstrap_template",
    "demo_registry",
    "envoy_dir",
    "location",
    "plugins_dir",
]

# The folder inside the installed package that a wheel build fills (see setup.py).
BUNDLE_DIR = "_bundled"
# Inside BUNDLE_DIR ↔ where the same files are in a checkout.
_IN_CHECKOUT = {
    "envoy": Path("envoy"),
    "demo-registry": Path("examples") / "registry",
    "plugins": Path("plugin-server") / "plugins",
}


class BundleMissing(FileNotFoundError):
    """Neither an installed bundle nor a checkout holds mcpgw's files: a broken install."""


def _package_dir() -> Path:
    root = files("mcpgw")
    if not isinstance(root, Path):  # a zipped install: unsupported, say so rather than fail later
        raise BundleMissing(f"mcpgw is installed as {root!r}, not as files; install the wheel with pip")
    return root


def location() -> tuple[str, Path]:
    """("wheel", <package>/_bundled) or ("checkout", <repository root>): where the files come from."""
    package = _package_dir()
    bundle = package / BUNDLE_DIR
    if bundle.is_dir():
        return "wheel", bundle
    # controlplane/mcpgw → the repository root, recognized by the template it must hold.
    repo = package.resolve().parents[1]
    if (repo / _IN_CHECKOUT["envoy"] / "bootstrap.yaml").is_file():
        return "checkout", repo
    raise BundleMissing(
        f"mcpgw's bundled files are missing: no {bundle} and no checkout around {package} "
        "(reinstall the wheel, or run from a checkout after `make install filters`)"
    )


def _path(name: str) -> Path:
    kind, base = location()
    return base / name if kind == "wheel" else base / _IN_CHECKOUT[name]


def envoy_dir() -> Path:
    """The folder of Envoy bootstrap templates."""
    return _path("envoy")


def bootstrap_template() -> Path:
    """The template `mcpgw bootstrap` and `mcpgw up` render (`envoy/bootstrap.yaml`)."""
    return envoy_dir() / "bootstrap.yaml"


def demo_registry() -> Path:
    """The demo registry `mcpgw up` serves without `-f` (read it, never write into it)."""
    return _path("demo-registry")


def plugins_dir() -> Path:
    """The plugin folder served when no other is given: `<name>/<version>/plugin.wasm`."""
    return _path("plugins")
