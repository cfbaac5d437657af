"""HTTP server for Wasm artifacts: Envoy fetches filters from here by URL and sha256.

GET /plugins/                                   JSON index of every valid plugin
GET /plugins/<name>/<version>/plugin.wasm       the module
GET /plugins/<name>/<version>/plugin.wasm.sha256
GET /healthz
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from mcpgw.bundled import plugins_dir
from pluginserver.catalog import ARTIFACT, DIGEST, PluginError, load, scan

ROOT = web.AppKey("root", Path)
# The plugins mcpgw ships with: plugin-server/plugins/ in a checkout, the wheel's own otherwise.
DEFAULT_ROOT = plugins_dir()


async def _index(request: web.Request) -> web.Response:
    plugins, problems = scan(request.app[ROOT])
    return web.json_response(
        {
            "plugins": [
                {"name": p.name, "version": p.version, "sha256": p.sha256, "size": p.size, "url": p.url_path}
                for p in plugins
            ],
            "problems": problems,
        }
    )


async def _artifact(request: web.Request) -> web.StreamResponse:
    name, version, file = (request.match_info[k] for k in ("name", "version", "file"))
    if file not in (ARTIFACT, DIGEST) or any(part in ("", ".", "..") for part in (name, version)):
        raise web.HTTPNotFound(text="no such file\n")
    try:
        plugin = load(name, version, request.app[ROOT])
    except PluginError as error:
        raise web.HTTPNotFound(text=f"{error}\n") from error
    if file == DIGEST:
        return web.Response(text=plugin.sha256 + "\n")
    return web.FileResponse(
        plugin.path, headers={"content-type": "application/wasm", "x-content-sha256": plugin.sha256}
    )


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def create_app(root: Path = DEFAULT_ROOT) -> web.Application:
    app = web.Application()
    app[ROOT] = root
    app.router.add_get("/plugins/", _index)
    app.router.add_get("/plugins/{name}/{version}/{file}", _artifact)
    app.router.add_get("/healthz", _healthz)
    return app
