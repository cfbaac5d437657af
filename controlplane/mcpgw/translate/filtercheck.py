"""Check each generated filter configuration with the filter's own parser, before Envoy gets it.

The `mcp-server` filter parses its configuration in `proxy_on_configure`; a configuration it
refuses leaves that server answering 500 and Envoy NACKing the listener. The control plane's
validation (`registry/`) says early and precisely what is wrong with a document, but it is a
second copy of the filter's rules. So, as `pgv.py` applies Envoy's own `validate.rules`, this
module applies the filter's: `wasm-filters/build.py` builds `config.parse` natively next to
`plugin.wasm` (`libconfigcheck.so`, from `src/check.zig`), and `FilterCheck` runs it on the
exact text Envoy would deliver. A configuration it accepts is one the filter accepts.
"""

from __future__ import annotations

import ctypes
import re
import sys
from pathlib import Path

__all__ = ["LIBRARY", "FilterCheck", "FilterRefused", "beside"]

LIBRARY = "libconfigcheck.dylib" if sys.platform == "darwin" else "libconfigcheck.so"
# Longer reasons are cut: they name a field path and a short cause.
_WHY_CAP = 4096
_OK, _REFUSED, _OUT_OF_MEMORY = 0, 1, 2
# The filter's reasons start with the configuration path at fault: `tools[3].request...: why`.
_PATH = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\[\d+\])?(?:\.[A-Za-z_][A-Za-z0-9_]*(?:\[\d+\])?)*): ")


class FilterRefused(ValueError):
    """The filter would refuse a configuration; `path` is the field of the configuration at fault."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        match = _PATH.match(reason)
        self.path = match.group(1) if match else ""


class FilterCheck:
    """The filter's configuration parser, loaded from its native build."""

    def __init__(self, library: Path) -> None:
        self.library = library
        self._lib = ctypes.CDLL(str(library))
        check = self._lib.mcpgw_check_config
        check.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_size_t),
        ]
        check.restype = ctypes.c_int
        self._check = check
        # The configuration schema (contract version) this build of the filter reads; None for
        # a library built before the filter declared one.
        self.schema: int | None = None
        if hasattr(self._lib, "mcpgw_config_schema"):
            schema = self._lib.mcpgw_config_schema
            schema.argtypes = []
            schema.restype = ctypes.c_uint32
            self.schema = int(schema())

    def check(self, configuration: str) -> None:
        """Raise `FilterRefused` with the filter's reason when it would refuse `configuration`."""
        text = configuration.encode()
        why = ctypes.create_string_buffer(_WHY_CAP)
        length = ctypes.c_size_t(0)
        # ctypes releases the GIL during the call: other threads keep running.
        result = self._check(text, len(text), why, _WHY_CAP, ctypes.byref(length))
        if result == _OK:
            return
        if result == _OUT_OF_MEMORY:
            raise MemoryError("the filter's configuration check ran out of memory")
        raise FilterRefused(why.raw[: length.value].decode("utf-8", "replace"))


def beside(plugin: Path) -> FilterCheck | None:
    """The check built next to the plugin module `plugin` (the same filter version), if any."""
    library = plugin.parent / LIBRARY
    return FilterCheck(library) if library.is_file() else None
