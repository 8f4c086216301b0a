"""Sender pools on a real engine: selection, refusal of foreign senders, per-sender pacing."""
import asyncio

import aiohttp

from tests.carriers.fakes.fake_twilio import FakeTwilio
from tests.engine import wait_terminal
from tests.integration.test_routing_health import REGION, SENT_IS_FINAL, twilio_carrier


async def test_pool_senders_are_chosen_refused_and_paced_on_their_own(make_engine, sqlite_url):
    async with FakeTwilio() as fake:
        engine = make_engine(sqlite_url, REGION + twilio_carrier("uk", fake, "0.0100"))
        key = engine.create_account("p")["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession() as http:
            # the slow long code is registered for France, so GB recipients get the other two by preference
            for address, country, rate in (("+447400000001", "FR", 2), ("+447400000002", "GB", 50),
                                           ("+447400000003", "GB", 50)):
                async with http.post(f"{engine.base_url}/v1/senders", headers=auth, json={
                        "channel": "sms", "address": address, "country": country, "rate_limit": rate}) as resp:
                    assert resp.status == 201
            async with http.get(f"{engine.base_url}/v1/senders", headers=auth) as resp:
                assert len((await resp.json())["data"]) == 3
            async with http.post(f"{engine.base_url}/v1/messages", headers=auth, json={
                    "channel": "sms", "to": "+447400123456", "body": "x", "from": "+447400999999"}) as resp:
                assert (resp.status, (await resp.json())["error"]["code"]) == (400, "invalid_sender")

            async def send(body: dict) -> str:
                async with http.post(f"{engine.base_url}/v1/messages", headers=auth, json=body) as resp:
                    assert resp.status == 202, await resp.text()
                    return (await resp.json())["id"]

            # 12 messages pinned to the slow sender (2/s), then 20 to recipients the pool spreads out
            slow = [await send({"channel": "sms", "to": "+447400123456", "body": f"slow {n}",
                                "from": "+447400000001"}) for n in range(12)]
            fast = [await send({"channel": "sms", "to": f"+4474001234{n:02d}", "body": f"fast {n}"})
                    for n in range(20)]
            fast_final = await wait_terminal(http, engine.base_url, key, fast, terminal=SENT_IS_FINAL, timeout=60)
            slow_done_when_fast_done = sum(1 for r in fake.requests if r.form()["From"] == "+447400000001")
            await wait_terminal(http, engine.base_url, key, slow, terminal=SENT_IS_FINAL, timeout=120)
            repeat = await send({"channel": "sms", "to": "+447400123400", "body": "again"})
            await wait_terminal(http, engine.base_url, key, [repeat], terminal=SENT_IS_FINAL)

    froms = {r.form()["Body"]: r.form()["From"] for r in fake.requests}
    assert {froms[f"fast {n}"] for n in range(20)} == {"+447400000002", "+447400000003"}  # spread over GB ones
    assert froms["again"] == froms["fast 0"]  # sticky: same recipient, same sender
    assert all(m["status"] == "sent" for m in fast_final.values())
    slow_times = sorted(r.at for r in fake.requests if r.form()["From"] == "+447400000001")
    busiest = max(sum(1 for t in slow_times if start <= t < start + 1.0) for start in slow_times)
    print(f"slow sender: {len(slow_times)} sends over {slow_times[-1] - slow_times[0]:.1f}s, busiest second "
          f"{busiest}; it had sent {slow_done_when_fast_done} when the other senders were done")
    assert busiest <= 2
    assert slow_done_when_fast_done < 12  # the others did not wait behind the busy sender


async def test_amqp_ingest_uses_the_sender_pool(make_engine, sqlite_url):
    from tests.integration.test_engine import publish_amqp

    async with FakeTwilio() as fake:
        engine = make_engine(sqlite_url, REGION + twilio_carrier("uk", fake, "0.0100"))
        account = engine.create_account("amqp-pool", "--amqp-user", "guest")
        auth = {"Authorization": f"Bearer {account['api_key']}"}
        async with aiohttp.ClientSession() as http:
            for address in ("+447400000002", "+447400000003"):
                async with http.post(f"{engine.base_url}/v1/senders", headers=auth, json={
                        "channel": "sms", "address": address, "country": "GB"}) as resp:
                    assert resp.status == 201
            async with http.post(f"{engine.base_url}/v1/messages", headers=auth, json={
                    "channel": "sms", "to": "+447400123456", "body": "over http"}) as resp:
                assert resp.status == 202
            await publish_amqp(engine.amqp_url, [
                (0, {"channel": "sms", "to": "+447400123456", "body": "over amqp"}),
                (1, {"channel": "sms", "to": "+447400123456", "body": "foreign", "from": "+447400999999"})])
            deadline = asyncio.get_running_loop().time() + 60
            while len(fake.requests) < 2:
                assert asyncio.get_running_loop().time() < deadline, fake.requests
                await asyncio.sleep(0.2)
            rejected = []
            while not rejected and asyncio.get_running_loop().time() < deadline:
                async with http.get(f"{engine.base_url}/v1/messages?status=rejected", headers=auth) as resp:
                    rejected = (await resp.json())["data"]
                await asyncio.sleep(0.2)

    froms = {r.form()["Body"]: r.form()["From"] for r in fake.requests}
    assert froms["over amqp"] == froms["over http"]  # the same sticky pool choice, whichever way it came in
    assert froms["over amqp"] in ("+447400000002", "+447400000003")
    assert [m["error"]["code"] for m in rejected] == ["invalid_sender"]  # a sender outside the pool
    assert "foreign" not in froms
