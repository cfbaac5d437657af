"""Run an aiohttp application on an address and learn the port it bound (0 = any free port)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from aiohttp import web


@dataclass
class ServedApp:
    runner: web.AppRunner
    host: str
    port: int
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> ServedApp:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None)
    if not sockets:
        await runner.cleanup()
        raise OSError(f"could not bind {host}:{port}")
    return ServedApp(
        runner=runner, host=host, port=int(sockets[0].getsockname()[1]), tls=ssl_context is not None
    )
