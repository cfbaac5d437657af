"""The plugin server and its catalog of `.wasm` artifacts."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mcpgw.httpserve import ServedApp, serve
from pluginserver.catalog import PluginError, latest
from pluginserver.server import create_app

MODULE = b"\0asm\1\0\0\0"


def add_plugin(root: Path, name: str, version: str, data: bytes = MODULE, digest: str | None = None) -> Path:
    directory = root / name / version
    directory.mkdir(parents=True)
    (directory / "plugin.wasm").write_bytes(data)
    (directory / "plugin.wasm.sha256").write_text((digest or hashlib.sha256(data).hexdigest()) + "\n")
    return directory


@pytest.fixture
async def plugin_server(tmp_path: Path) -> AsyncIterator[ServedApp]:
    served = await serve(create_app(tmp_path), "127.0.0.1", 0)
    try:
        yield served
    finally:
        await served.close()


def test_latest_picks_the_highest_version_numerically(tmp_path: Path) -> None:
    for version in ("0.9.0", "0.10.0", "0.2.1"):
        add_plugin(tmp_path, "mcp-server", version)
    assert latest("mcp-server", tmp_path).version == "0.10.0"


def test_missing_plugin_and_digest_mismatch_are_named(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="make filters"):
        latest("mcp-server", tmp_path)
    add_plugin(tmp_path, "mcp-server", "1.0.0", digest="0" * 64)
    with pytest.raises(PluginError, match="does not match"):
        latest("mcp-server", tmp_path)


async def test_serves_index_module_and_digest(tmp_path: Path, plugin_server: ServedApp) -> None:
    add_plugin(tmp_path, "mcp-server", "0.1.0")
    add_plugin(tmp_path, "broken", "1.0.0", digest="f" * 64)
    digest = hashlib.sha256(MODULE).hexdigest()
    async with httpx.AsyncClient(base_url=plugin_server.url) as http:
        index = (await http.get("/plugins/")).json()
        assert index["plugins"] == [
            {
                "name": "mcp-server",
                "version": "0.1.0",
                "sha256": digest,
                "size": len(MODULE),
                "url": "/plugins/mcp-server/0.1.0/plugin.wasm",
            }
        ]
        assert len(index["problems"]) == 1 and "broken" in index["problems"][0]
        module = await http.get("/plugins/mcp-server/0.1.0/plugin.wasm")
        assert module.content == MODULE and module.headers["content-type"] == "application/wasm"
        assert (await http.get("/plugins/mcp-server/0.1.0/plugin.wasm.sha256")).text == digest + "\n"
        assert (await http.get("/plugins/broken/1.0.0/plugin.wasm")).status_code == 404
        assert (await http.get("/plugins/mcp-server/0.1.0/other.txt")).status_code == 404
        assert (await http.get("/plugins/mcp-server/%2E%2E/plugin.wasm")).status_code == 404
