"""Inbound messages and opt-out over Twilio's signed inbound webhook."""
import asyncio

import aio_pika
import aiohttp
import orjson

from tests.carriers.fakes.fake_twilio import FakeTwilio, sign_callback
from tests.integration.test_routing_health import REGION, twilio_carrier


async def test_stop_and_start_keywords_manage_the_suppression_list(make_engine, sqlite_url):
    async with FakeTwilio() as fake:
        engine = make_engine(sqlite_url, REGION + twilio_carrier("uk", fake, "0.0100"))
        key = engine.create_account("in")["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        connection = await aio_pika.connect(engine.amqp_url)
        channel = await connection.channel()
        events = await channel.declare_queue(exclusive=True)
        await events.bind("msgroute.events", "inbound.#")
        url = f"{engine.base_url}/webhooks/inbound/uk"

        async with aiohttp.ClientSession() as http:
            async def inbound(body: str, sender="+447400123456", to="+447400000002", token="token") -> int:
                form = {"MessageSid": "SM1", "From": sender, "To": to, "Body": body}
                async with http.post(url, data=form, headers={"X-Twilio-Signature": sign_callback(token, url, form)}) \
                        as resp:
                    return resp.status

            async def send() -> tuple[int, dict]:
                async with http.post(f"{engine.base_url}/v1/messages", headers=auth,
                                     json={"channel": "sms", "to": "+447400123456", "body": "hi"}) as resp:
                    return resp.status, await resp.json()

            async with http.post(f"{engine.base_url}/v1/senders", headers=auth,
                                 json={"channel": "sms", "address": "+447400000002"}) as resp:
                assert resp.status == 201
            assert await inbound(" stop ") == 200
            assert await inbound("STOP", token="forged") == 403
            assert await inbound("hello", sender="+447400999999", to="+447400555555") == 200  # nobody's: dropped
            for _ in range(40):
                status, body = await send()
                if status == 400:
                    break
                await asyncio.sleep(0.25)
            assert (status, body["error"]["code"]) == (400, "recipient_opted_out")
            async with http.get(f"{engine.base_url}/v1/suppressions", headers=auth) as resp:
                assert [(s["address"], s["reason"]) for s in (await resp.json())["data"]] == \
                    [("+447400123456", "opted_out")]
            assert await inbound("Start") == 200
            for _ in range(40):
                status, body = await send()
                if status == 202:
                    break
                await asyncio.sleep(0.25)
            assert status == 202
            # by API: add, refuse, delete
            async with http.post(f"{engine.base_url}/v1/suppressions", headers=auth,
                                 json={"channel": "sms", "address": "+447400123456"}) as resp:
                assert resp.status == 201
            assert (await send())[0] == 400
            async with http.delete(f"{engine.base_url}/v1/suppressions/+447400123456", headers=auth) as resp:
                assert resp.status == 204
            assert (await send())[0] == 202

        received = []
        for _ in range(20):
            message = await events.get(fail=False, no_ack=True)
            if message is None:
                if len(received) >= 2:
                    break
                await asyncio.sleep(0.25)
                continue
            received.append(orjson.loads(message.body))
        await connection.close()
    assert [(e["body"].strip(), e["from"], e["to"]) for e in received] == [
        ("stop", "+447400123456", "+447400000002"), ("Start", "+447400123456", "+447400000002")]
    assert all(e["type"] == "message.inbound" and e["carrier"] == "uk" for e in received)
