"""Vonage multipart SMS: every part's id is kept, and each part gets its own signed receipt."""
import asyncio
from dataclasses import replace

from aiohttp import web

from carriers.vonage import VonageAdapter
from router.messages import Status
from tests.carriers.fakes.fake_vonage import FakeVonage
from tests.carriers.test_vonage import adapter, get_dlr, sms

LONG = "The quick brown fox jumps over the lazy dog. " * 8  # 360 GSM-7 characters: 3 parts


async def test_a_long_text_keeps_every_part_id(http):
    async with FakeVonage() as fake:
        result = await adapter(fake.base_url, http).send(sms(body=LONG))
    assert result.units == 3
    assert len(result.part_ids) == 3 and len(set(result.part_ids)) == 3
    assert result.carrier_message_id == result.part_ids[0]
    assert result.carrier_price == "0.09990000"


async def test_a_single_part_text_has_no_part_ids(http):
    async with FakeVonage() as fake:
        result = await adapter(fake.base_url, http).send(sms())
    assert result.units == 1 and result.part_ids == ()


async def test_the_fake_sends_one_signed_receipt_per_part_that_the_adapter_maps(http):
    received = []

    async def dlr(request: web.Request) -> web.Response:
        received.append(dict(request.query))
        return web.Response(status=200)
    app = web.Application()
    app.router.add_get("/webhooks/dlr/vonage-eu", dlr)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        outcome = (lambda part, parts, form: ("failed", "1") if part == 2 else ("delivered", "0"))
        async with FakeVonage(dlrs=True, dlr_delay=0, outcome=outcome) as fake:
            vonage = adapter(fake.base_url, http)
            vonage = VonageAdapter(replace(vonage.config, public_url=f"http://127.0.0.1:{port}"), http)
            result = await vonage.send(sms(body=LONG))
            await fake.dlrs_settled()
            await asyncio.sleep(0)
    finally:
        await runner.cleanup()
    assert [d.status for d in fake.dlrs_sent] == [200, 200, 200]
    receipts = {}
    for params in received:
        request = get_dlr(params)
        assert vonage.verify_receipt(request)
        [receipt] = vonage.parse_receipt(request)
        assert receipt.extra["msgroute_id"] == "msg_01"
        receipts[receipt.carrier_message_id] = (receipt.status, receipt.error_code)
    assert receipts == {result.part_ids[0]: (Status.DELIVERED, None), result.part_ids[1]: (Status.UNDELIVERED, "1"),
                        result.part_ids[2]: (Status.DELIVERED, None)}
