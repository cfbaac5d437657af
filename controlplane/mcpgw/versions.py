"""What runs, by version: mcpgw, the plugin it serves, and the configuration schema both read.

Three numbers a platform team tracks together: mcpgw's version (pyproject.toml, the one source,
read back from the installed distribution), the plugin's (`wasm-filters/<name>/VERSION`, its
folder under `plugins/<name>/<version>/`), and the version of the contract between them, the
configuration schema (`wasm-filters/mcp-server/CONFIG.md`): `SCHEMA` in `translate/filterconfig.py`
is what the control plane writes, `schema_version` in the filter's `config.zig` what the plugin
reads (reported by its native check library). `mcpgw --version` and the admin API's `/status`
show them side by side; the control plane refuses to start when the two schemas differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcpgw import __version__
from mcpgw.translate.filtercheck import FilterCheck, beside
from mcpgw.translate.filterconfig import SCHEMA
from pluginserver.catalog import Plugin, PluginError, latest

__all__ = ["FILTER_NAME", "SchemaMismatch", "check_schema", "describe", "version_text"]

FILTER_NAME = "mcp-server"


class SchemaMismatch(PluginError):
    """The plugin reads another configuration schema than this control plane writes."""


def check_schema(plugin: Plugin, check: FilterCheck | None) -> None:
    """Raise `SchemaMismatch` when `plugin` (through its check library) reads another schema."""
    if check is not None and check.schema is not None and check.schema != SCHEMA:
        raise SchemaMismatch(
            f"{plugin.path}: plugin {plugin.name} {plugin.version} reads configuration schema "
            f"{check.schema}, mcpgw {__version__} writes schema {SCHEMA}; install a plugin and an "
            "mcpgw of the same release"
        )


def describe(plugin: Plugin | None, check: FilterCheck | None) -> dict[str, Any]:
    """The `version` block of `/status`."""
    return {
        "mcpgw": __version__,
        "config_schema": SCHEMA,
        "plugin": None
        if plugin is None
        else {
            "name": plugin.name,
            "version": plugin.version,
            "sha256": plugin.sha256,
            # None: no native check library beside the module, so its schema is not known here
            # (the filter still refuses a configuration of another schema).
            "config_schema": check.schema if check is not None else None,
        },
    }


def version_text(plugins_dir: Path) -> str:
    """`mcpgw --version`: mcpgw's version, then the plugin it would serve from `plugins_dir`."""
    lines = [f"mcpgw {__version__} (configuration schema {SCHEMA})"]
    try:
        plugin = latest(FILTER_NAME, plugins_dir)
    except (PluginError, OSError) as error:
        lines.append(f"plugin {FILTER_NAME}: none ({error})")
        return "\n".join(lines)
    try:
        check = beside(plugin.path)
    except OSError:
        check = None
    schema = check.schema if check is not None else None
    agreement = (
        "configuration schema unknown (no check library beside it)"
        if schema is None
        else f"configuration schema {schema}"
        + ("" if schema == SCHEMA else f", MISMATCH: mcpgw writes {SCHEMA}")
    )
    lines.append(f"plugin {plugin.name} {plugin.version} ({agreement}) from {plugin.path.parent}")
    return "\n".join(lines)
