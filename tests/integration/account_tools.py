"""Helpers for the privacy and account tests: the HTTP API, account.* events, a callback receiver."""
from __future__ import annotations

import asyncio

import aio_pika
import aiohttp
import orjson
from aiohttp import web

from tests.engine import free_port

ADMIN_TOKEN = "test-admin-token"  # what tests/conftest.py gives every engine
HASH_KEY = "test-pseudonym-key-0123456789abcdef"


class Api:
    def __init__(self, http: aiohttp.ClientSession, base_url: str):
        self.http = http
        self.base_url = base_url

    async def call(self, method: str, path: str, key: str | None = None, json=None,
                   headers: dict | None = None) -> tuple[int, dict]:
        headers = dict(headers or {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        async with self.http.request(method, self.base_url + path, json=json, headers=headers) as resp:
            text = await resp.text()
            return resp.status, (orjson.loads(text) if text else {})

    async def admin(self, method: str, path: str, json=None) -> tuple[int, dict]:
        return await self.call(method, "/admin" + path, ADMIN_TOKEN, json)

    async def send(self, key: str, message: dict) -> tuple[int, dict]:
        return await self.call("POST", "/v1/messages", key, message)


class EventTap:
    """A queue of our own bound to msgroute.events (as any consumer would bind one)."""

    def __init__(self, amqp_url: str, pattern: str = "account.#"):
        self.amqp_url = amqp_url
        self.pattern = pattern
        self.events: asyncio.Queue = asyncio.Queue()

    async def __aenter__(self) -> EventTap:
        self._connection = await aio_pika.connect(self.amqp_url)
        channel = await self._connection.channel()
        exchange = await channel.get_exchange("msgroute.events")
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, self.pattern)

        async def on_message(message):
            async with message.process():
                await self.events.put((message.routing_key, orjson.loads(message.body)))
        await queue.consume(on_message)
        return self

    async def __aexit__(self, *exc) -> None:
        await self._connection.close()

    async def next(self, event_type: str, timeout: float = 15) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                key, event = await self.events.get()
                if key == event_type:
                    return event


class CallbackSink:
    """An HTTP server on loopback that records every POST (the account's callback URL)."""

    def __init__(self):
        self.port = free_port()
        self.received: asyncio.Queue = asyncio.Queue()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callbacks"

    async def __aenter__(self) -> CallbackSink:
        async def handle(request: web.Request) -> web.Response:
            await self.received.put((dict(request.headers), await request.read()))
            return web.Response(status=204)
        app = web.Application()
        app.router.add_post("/callbacks", handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()

    async def next(self, timeout: float = 20) -> tuple[dict, bytes]:
        return await asyncio.wait_for(self.received.get(), timeout)


async def eventually(probe, timeout: float = 15, every: float = 0.2):
    """Await `probe()` until it returns something truthy."""
    async with asyncio.timeout(timeout):
        while True:
            result = await probe()
            if result:
                return result
            await asyncio.sleep(every)
