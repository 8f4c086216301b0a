"""`msgroute gateway`: serve the app until SIGTERM, then finish in-flight requests."""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from router.settings import Settings
from workers.gateway.app import build_app

log = logging.getLogger("msgroute.gateway")


async def main(settings: Settings, stop: asyncio.Event) -> None:
    app = build_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=10)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.gateway.host, settings.gateway.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            from router.errors import UnavailableError
            raise UnavailableError(f"cannot listen on {settings.gateway.host}:{settings.gateway.port}: "
                                   f"{exc.strerror}") from None
        log.info("gateway listening", extra={"host": settings.gateway.host, "port": settings.gateway.port})
        await stop.wait()
    finally:
        await runner.cleanup()
    log.info("gateway stopped")
