"""The sandbox carrier's receipts, posted to a real webhook receiver on loopback."""
import asyncio

import orjson
import pytest
from aiohttp import web

from carriers.base import CarrierConfig, InboundRequest
from carriers.sandbox import SandboxAdapter, sign
from router.messages import Channel, Envelope, Status

SECRET = "s3cret"


class Receiver:
    """Takes receipt POSTs like the gateway does; answers 500 to the first `refuse` of them."""

    def __init__(self, refuse: int = 0):
        self.posts: list[InboundRequest] = []
        self.refused = 0
        self._refuse = refuse

    async def handle(self, request: web.Request) -> web.Response:
        if self.refused < self._refuse:
            self.refused += 1
            return web.Response(status=500)
        self.posts.append(InboundRequest("POST", str(request.url), {k.lower(): v for k, v in request.headers.items()},
                                         await request.read()))
        return web.Response(status=200)


@pytest.fixture
async def receiver_url():
    receivers = []

    async def start(receiver: Receiver) -> str:
        app = web.Application()
        app.router.add_post("/webhooks/dlr/sandbox", receiver.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        receivers.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield start
    for runner in receivers:
        await runner.cleanup()


def sms(n: int, to: str = "+447911123456") -> Envelope:
    return Envelope(id=f"msg_{n:04d}", account_id="acc_1", channel=Channel.SMS, to=to, body="hi",
                    created_at="2026-12-06T00:00:00.000Z")


def sandbox(public_url: str, http, **settings) -> SandboxAdapter:
    return SandboxAdapter(CarrierConfig("sandbox", "sms", {"webhook_secret": SECRET, "receipt_delay_ms": 20,
                                                            **settings}, public_url), http)


async def test_receipts_due_together_share_a_post_and_each_arrives_once(receiver_url, http):
    receiver = Receiver()
    adapter = sandbox(await receiver_url(receiver), http)
    sent = await asyncio.gather(*(adapter.send(sms(n, "+15005550003" if n % 10 == 0 else "+447911123456"))
                                  for n in range(300)))
    await adapter.aclose()
    receipts = []
    for post in receiver.posts:
        assert adapter.verify_receipt(post)
        receipts += adapter.parse_receipt(post)
    sizes = [len(adapter.parse_receipt(post)) for post in receiver.posts]
    assert len(sizes) <= 10 and max(sizes) <= 100, sizes  # one POST per receipt before; receipt_batch = 100
    assert sorted(r.carrier_message_id for r in receipts) == sorted(s.carrier_message_id for s in sent)
    by_ref = {r.extra["msgroute_id"]: r for r in receipts}
    assert by_ref["msg_0010"].status == Status.UNDELIVERED and by_ref["msg_0010"].error_code == "sandbox_bounce"
    assert by_ref["msg_0011"].status == Status.DELIVERED and by_ref["msg_0011"].error_code is None


async def test_an_idle_sandbox_posts_each_receipt_when_due(receiver_url, http):
    receiver = Receiver()
    adapter = sandbox(await receiver_url(receiver), http, receipt_delay_ms=10)
    for n in range(3):
        await adapter.send(sms(n))
        await asyncio.sleep(0.1)
        assert len(receiver.posts) == n + 1  # not held back waiting for company
    await adapter.aclose()
    assert [len(adapter.parse_receipt(p)) for p in receiver.posts] == [1, 1, 1]


async def test_a_refused_post_is_retried_and_the_rest_keep_flowing(receiver_url, http):
    receiver = Receiver(refuse=1)
    adapter = sandbox(await receiver_url(receiver), http, receipt_delay_ms=10)
    await adapter.send(sms(1))
    await asyncio.sleep(0.1)  # the first POST was refused; its retry waits 0.2 s
    await adapter.send(sms(2))
    await asyncio.sleep(0.1)
    assert [r.extra["msgroute_id"] for p in receiver.posts for r in adapter.parse_receipt(p)] == ["msg_0002"]
    await adapter.aclose()
    assert receiver.refused == 1
    assert sorted(r.extra["msgroute_id"] for p in receiver.posts for r in adapter.parse_receipt(p)) == \
        ["msg_0001", "msg_0002"]


def test_a_single_receipt_object_is_still_understood():
    adapter = sandbox("http://unused", None)
    body = orjson.dumps({"id": "SB1", "ref": "msg_1", "status": "delivered", "error": None})
    request = InboundRequest("POST", "http://unused/webhooks/dlr/sandbox",
                             {"x-sandbox-signature": sign(SECRET, body)}, body)
    assert adapter.verify_receipt(request)
    [receipt] = adapter.parse_receipt(request)
    assert (receipt.carrier_message_id, receipt.status, receipt.extra["msgroute_id"]) == \
        ("SB1", Status.DELIVERED, "msg_1")
