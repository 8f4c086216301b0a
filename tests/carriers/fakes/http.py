"""A fake HTTP carrier: an aiohttp app on 127.0.0.1 that records every request."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import orjson
from aiohttp import web


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)  # when it arrived
    behaviour: str = ""  # how the fake was behaving when it arrived

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    def json(self):
        return orjson.loads(self.body)


class FakeHttpCarrier:
    """Subclasses add routes in `routes()`; `behaviour` picks how they answer."""

    def __init__(self, behaviour: str = "happy"):
        self.behaviour = behaviour
        self.requests: list[Recorded] = []
        self.base_url = ""
        self.closing = asyncio.Event()  # a "slow" behaviour holds its reply until shutdown
        self._runner: web.AppRunner | None = None

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    @web.middleware
    async def _record(self, request: web.Request, handler):
        body = await request.read()
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), body,
                                      behaviour=self.behaviour))
        return await handler(request)

    async def __aenter__(self):
        app = web.Application(middlewares=[self._record])
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc):
        self.closing.set()
        await self._runner.cleanup()
