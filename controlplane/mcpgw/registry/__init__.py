"""The registry: what operators declared (model), how it is checked (validate), where it lives (stores)."""

from __future__ import annotations

from pathlib import Path

from mcpgw.registry.store import RegistryStore

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def is_store_url(spec: str | Path) -> bool:
    return isinstance(spec, str) and spec.startswith(REDIS_SCHEMES)


def open_store(spec: str | Path) -> RegistryStore:
    """A Redis store for `redis://…` (shared by control-plane replicas), else a registry directory.

    The Redis password may be given in the URL or, to keep it out of process listings, in
    $MCPGW_REDIS_PASSWORD.
    """
    if is_store_url(spec):
        from mcpgw.registry.redisstore import RedisStore

        return RedisStore(str(spec))
    from mcpgw.registry.filesource import FileStore

    return FileStore(Path(spec))
