"""The registry: what operators declared (model), how it is checked (validate), where it lives (stores)."""

from __future__ import annotations

from pathlib import Path

from mcpgw.redisurl import SCHEMES as REDIS_SCHEMES
from mcpgw.redisurl import is_redis_url
from mcpgw.registry.store import RegistryStore

__all__ = ["REDIS_SCHEMES", "is_store_url", "open_store"]


def is_store_url(spec: str | Path) -> bool:
    return is_redis_url(spec)


def open_store(spec: str | Path) -> RegistryStore:
    """A Redis store for `redis://…` or `redis+sentinel://…` (shared by control-plane replicas),
    else a registry directory (`mcpgw.redisurl` has every URL form).

    The Redis password may be given in the URL or, to keep it out of process listings, in
    $MCPGW_REDIS_PASSWORD.
    """
    if is_store_url(spec):
        from mcpgw.registry.redisstore import RedisStore

        return RedisStore(str(spec))
    from mcpgw.registry.filesource import FileStore

    return FileStore(Path(spec))
