"""Run an aiohttp application on an address and learn the port it bound (0 = any free port)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web


@dataclass
class ServedApp:
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve(app: web.Application, host: str, port: int) -> ServedApp:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None)
    if not sockets:
        await runner.cleanup()
        raise OSError(f"could not bind {host}:{port}")
    return ServedApp(runner=runner, host=host, port=int(sockets[0].getsockname()[1]))
