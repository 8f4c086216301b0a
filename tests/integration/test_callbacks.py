"""Customer status callbacks: signed with the documented recipe, retried, SSRF-guarded."""
import asyncio
import hashlib
import hmac
import time

import aiohttp
import orjson
from aiohttp import web

from tests.engine import SANDBOX_CARRIERS, DEFAULT_ROUTING, wait_terminal


def verify_like_a_customer(secret: str, body: bytes, header: str) -> bool:
    """The README's recipe, written independently of the engine's code."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    if abs(time.time() - int(parts["t"])) > 300:
        return False
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


class Receiver:
    def __init__(self, fail_first: int = 0):
        self.calls: list[tuple[bytes, str]] = []
        self.fail_first = fail_first

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append((body, request.headers.get("X-Msgroute-Signature", "")))
        if len(self.calls) <= self.fail_first:
            return web.Response(status=503)
        return web.Response(status=204)

    async def __aenter__(self):
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()


async def test_status_callbacks_are_signed_per_the_documented_recipe_and_retried(make_engine, sqlite_url):
    async with Receiver(fail_first=1) as receiver:
        engine = make_engine(sqlite_url, SANDBOX_CARRIERS + DEFAULT_ROUTING)
        account = engine.create_account("cb", "--callback-url", receiver.url)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{engine.base_url}/v1/messages",
                                 headers={"Authorization": f"Bearer {account['api_key']}"},
                                 json={"channel": "sms", "to": "+447400123456", "body": "hi",
                                       "metadata": {"order": 42}}) as resp:
                message_id = (await resp.json())["id"]
            await wait_terminal(http, engine.base_url, account["api_key"], [message_id])
            for _ in range(60):  # the first attempt got a 503: its retry comes through a delay queue
                statuses = {orjson.loads(body)["status"] for body, _ in receiver.calls[1:]}
                if {"routed", "sent", "delivered"} <= statuses:
                    break
                await asyncio.sleep(0.5)
    events = [orjson.loads(body) for body, _ in receiver.calls]
    assert {"routed", "sent", "delivered"} <= {e["status"] for e in events[1:]}
    assert all(verify_like_a_customer(account["webhook_secret"], body, sig) for body, sig in receiver.calls)
    assert not verify_like_a_customer("whsec_wrong", *receiver.calls[0])
    delivered = next(e for e in events if e["status"] == "delivered")
    assert delivered["message_id"] == message_id and delivered["metadata"] == {"order": 42}
    assert delivered["previous_status"] == "sent" and delivered["carrier"] == "sms-uk"
    retried = [sig for body, sig in receiver.calls if body == receiver.calls[0][0]]
    assert len(retried) == 2  # the refused first delivery came again
