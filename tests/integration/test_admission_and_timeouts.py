"""Admission control (429 would_expire) and the receipt timeout with late receipts."""
import asyncio

import aio_pika
import aiohttp
import orjson

from tests.carriers.fakes.fake_twilio import FakeTwilio, sign_callback
from tests.engine import wait_terminal
from tests.integration.test_routing_health import REGION, SENT_IS_FINAL, send_many, twilio_carrier


async def test_backlog_past_validity_is_refused_at_ingest(make_engine, sqlite_url):
    async with FakeTwilio() as fake:
        engine = make_engine(sqlite_url, REGION + twilio_carrier("slow", fake, "0.0100", "rate_limit = 2"))
        key = engine.create_account()["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession() as http:
            await send_many(http, engine, key, [f"backlog {n}" for n in range(100)])
            body = {"channel": "sms", "to": "+447400123456", "body": "urgent", "validity_period": 10}
            for _ in range(40):  # the gateway sees queue depths every few seconds
                async with http.post(f"{engine.base_url}/v1/messages", headers=auth, json=body) as resp:
                    status, payload, retry_after = resp.status, await resp.json(), resp.headers.get("Retry-After")
                if status == 429:
                    break
                await asyncio.sleep(0.5)
            assert (status, payload["error"]["code"]) == (429, "would_expire")
            assert int(retry_after) >= 1
            async with http.post(f"{engine.base_url}/v1/messages", headers=auth,
                                 json={**body, "validity_period": 3600}) as resp:
                assert resp.status == 202


async def test_backlog_past_validity_is_refused_over_amqp_ingest_too(make_engine, sqlite_url):
    async with FakeTwilio() as fake:
        engine = make_engine(sqlite_url, REGION + twilio_carrier("slow", fake, "0.0100", "rate_limit = 2"))
        account = engine.create_account("amqp-backlog", "--amqp-user", "guest")
        async with aiohttp.ClientSession() as http:
            await send_many(http, engine, account["api_key"], [f"backlog {n}" for n in range(100)])
            connection = await aio_pika.connect(engine.amqp_url)
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                ingest = await channel.get_exchange("msgroute.ingest")
                rejected = await channel.declare_queue("msgroute.rejected", passive=True)

                async def publish(tag: str, validity_period: int) -> None:
                    body = {"channel": "sms", "to": "+447400123456", "body": tag, "validity_period": validity_period,
                            "metadata": {"tag": tag}}
                    await ingest.publish(aio_pika.Message(orjson.dumps(body), content_type="application/json",
                                                          user_id="guest", message_id=tag,
                                                          delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                         routing_key="send.sms")

                refusal = None
                for n in range(40):  # the route worker reads the carrier's backlog every 2 s
                    await publish(f"urgent-{n}", 10)
                    await asyncio.sleep(0.5)
                    refusal = await rejected.get(fail=False)
                    if refusal is not None:
                        break
                assert refusal is not None, "no AMQP message was refused for the carrier's backlog"
                await refusal.ack()
                assert refusal.headers["x-reject-reason"].startswith("would_expire: "), refusal.headers
                assert refusal.message_id.startswith("urgent-")  # as published: the publisher can match it
                assert orjson.loads(refusal.body)["metadata"]["tag"] == refusal.message_id

                await publish("roomy", 3600)  # a validity the backlog fits in is accepted
                for _ in range(40):
                    async with http.get(f"{engine.base_url}/v1/messages?limit=500",
                                        headers={"Authorization": f"Bearer {account['api_key']}"}) as resp:
                        tags = {(m.get("metadata") or {}).get("tag"): m["status"] for m in (await resp.json())["data"]}
                    if "roomy" in tags:
                        break
                    await asyncio.sleep(0.25)
                assert tags.get("roomy") not in (None, "rejected"), tags.get("roomy")
                assert tags[refusal.message_id] == "rejected"


async def test_receipt_timeout_closes_a_silent_message_and_keeps_a_late_receipt(make_engine, sqlite_url):
    async with FakeTwilio() as fake:
        carrier = twilio_carrier("quiet", fake, "0.0100").replace("receipts = false",
                                                                  "receipts = true\nreceipt_timeout = 2")
        engine = make_engine(sqlite_url, REGION + carrier)
        key = engine.create_account()["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession() as http:
            [message_id] = await send_many(http, engine, key, ["no receipt will come"])
            final = await wait_terminal(http, engine.base_url, key, [message_id], timeout=30)
            message = final[message_id]
            assert message["status"] == "undelivered" and message["error"]["code"] == "receipt_timeout"
            # the carrier's receipt arrives after all
            sid = fake.requests[0].form()
            callback = sid["StatusCallback"]
            async with http.get(f"{engine.base_url}/v1/messages/{message_id}", headers=auth) as resp:
                assert (await resp.json())["status"] == "undelivered"
            [usage] = engine.cli("usage", "export", "--format", "jsonl").stdout.splitlines()
            form = {"MessageSid": orjson.loads(usage)["carrier_message_id"], "MessageStatus": "delivered"}
            assert callback.startswith(engine.base_url)
            async with http.post(callback, data=form,
                                 headers={"X-Twilio-Signature": sign_callback("token", callback, form)}) as resp:
                assert resp.status == 200
            for _ in range(40):
                async with http.get(f"{engine.base_url}/v1/messages/{message_id}", headers=auth) as resp:
                    message = await resp.json()
                if message.get("late_receipts"):
                    break
                await asyncio.sleep(0.25)
        assert message["status"] == "undelivered"
        assert [h["status"] for h in message["status_history"]] == ["queued", "routed", "sent", "undelivered"]
        assert [r["status"] for r in message["late_receipts"]] == ["delivered"]


async def test_a_pool_senders_backlog_past_validity_is_refused_at_ingest(make_engine, store_url):
    async with FakeTwilio() as fake:
        engine = make_engine(store_url, REGION + twilio_carrier("uk", fake, "0.0100"))  # no carrier rate_limit
        key = engine.create_account()["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession() as http:
            for address, country, rate in (("+447400000001", "GB", 2), ("+447400000002", "FR", 50)):
                async with http.post(f"{engine.base_url}/v1/senders", headers=auth, json={
                        "channel": "sms", "address": address, "country": country, "rate_limit": rate}) as resp:
                    assert resp.status == 201

            async def send(**fields) -> tuple[int, dict, str | None]:
                async with http.post(f"{engine.base_url}/v1/messages", headers=auth, json={
                        "channel": "sms", "to": "+447400123456", "body": "x", **fields}) as resp:
                    return resp.status, await resp.json(), resp.headers.get("Retry-After")

            # 16 messages for the slow sender (2/s): about 8 s of work ahead of the next one
            backlog = []
            for n in range(16):
                status, body, _ = await send(body=f"backlog {n}", **{"from": "+447400000001"})
                assert status == 202
                backlog.append(body["id"])
            # the sender msgroute picks for a GB recipient is the slow one: refused, naming it
            status, body, retry_after = await send(body="urgent", validity_period=4)
            assert (status, body["error"]["code"], body["error"]["field"]) == (429, "would_expire", "from")
            assert "+447400000001" in body["error"]["message"]
            assert 1 <= int(retry_after) <= 8
            status, body, _ = await send(body="urgent, named", validity_period=4, **{"from": "+447400000001"})
            assert (status, body["error"]["code"]) == (429, "would_expire")
            async with http.post(f"{engine.base_url}/v1/messages/batch", headers=auth, json={"messages": [
                    {"channel": "sms", "to": "+447400123456", "body": "urgent in a batch", "validity_period": 4},
                    {"channel": "sms", "to": "+447400123456", "body": "patient in a batch",
                     "validity_period": 600}]}) as resp:
                results = (await resp.json())["results"]
            assert resp.status == 202 and results[0]["error"]["code"] == "would_expire" and "id" in results[1]
            backlog.append(results[1]["id"])
            # another sender, a validity long enough, or none at all: accepted
            fast = await send(body="urgent, other sender", validity_period=4, **{"from": "+447400000002"})
            roomy = await send(body="urgent enough", validity_period=120)
            plain = await send(body="whenever")
            assert [s for s, _, _ in (fast, roomy, plain)] == [202, 202, 202]
            done = await wait_terminal(http, engine.base_url, key, backlog + [r[1]["id"] for r in (fast, roomy, plain)],
                                       terminal=SENT_IS_FINAL, timeout=60)
            assert {m["status"] for m in done.values()} == {"sent"}
            # the backlog went out: the same urgent message is taken now
            await asyncio.sleep(2.5)  # the gateway's backlog snapshot is at most 2 s old
            status, body, _ = await send(body="urgent, later", validity_period=4)
            assert status == 202, body
            await wait_terminal(http, engine.base_url, key, [body["id"]], terminal=SENT_IS_FINAL, timeout=30)
    sent = [r.form()["Body"] for r in fake.requests]
    assert not [b for b in sent if b in ("urgent", "urgent, named", "urgent in a batch")]
    assert len(sent) == 16 + 5
