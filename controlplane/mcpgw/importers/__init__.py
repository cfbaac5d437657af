"""Importers: tool definitions written for other systems → our `kind: McpServer` documents.

Each importer is a pure function `(parsed input, ImportOptions) -> ImportResult`; reading the
input and writing YAML are in `mcpgw.importers.io`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcpgw.importers.common import ImportFailed, ImportOptions, ImportResult
from mcpgw.importers.higress import import_higress
from mcpgw.importers.nacos import import_nacos
from mcpgw.importers.openapi import import_openapi

IMPORTERS: dict[str, Callable[[Any, ImportOptions], ImportResult]] = {
    "openapi": import_openapi,
    "higress": import_higress,
    "nacos": import_nacos,
}

__all__ = ["IMPORTERS", "ImportFailed", "ImportOptions", "ImportResult"]
