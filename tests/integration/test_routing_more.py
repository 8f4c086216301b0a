"""Expiry, poison messages and `routes explain` on a real engine."""
import asyncio

import aio_pika
import aiohttp
import orjson

from tests.engine import SANDBOX_CARRIERS, wait_terminal

CONFIG = SANDBOX_CARRIERS + "[routing]\nretry_delays = [2]\nmax_attempts = 5\ncircuit_failure_threshold = 1000\n"


async def test_expiry_poison_and_explain(make_engine, sqlite_url):
    engine = make_engine(sqlite_url, CONFIG)
    account = engine.create_account("r", "--regions", "uk-south,us-east")
    key = account["api_key"]
    async with aiohttp.ClientSession() as http:
        # a message that keeps failing transiently outlives its validity period: expired, not sent late
        async with http.post(f"{engine.base_url}/v1/messages", headers={"Authorization": f"Bearer {key}"},
                             json={"channel": "email", "to": "flaky@example.com", "body": "x",
                                   "validity_period": 1}) as resp:
            message_id = (await resp.json())["id"]
        final = await wait_terminal(http, engine.base_url, key, [message_id], timeout=60)
        message = final[message_id]
        # email is served only in eu-west, which this account may not use
        assert message["status"] == "rejected" and message["error"]["code"] == "region_not_allowed"

        other = engine.create_account("anywhere")["api_key"]
        async with http.post(f"{engine.base_url}/v1/messages", headers={"Authorization": f"Bearer {other}"},
                             json={"channel": "email", "to": "flaky@example.com", "body": "x",
                                   "validity_period": 1}) as resp:
            message_id = (await resp.json())["id"]
        final = await wait_terminal(http, engine.base_url, other, [message_id], timeout=60)
        message = final[message_id]
        assert message["status"] == "expired", message
        assert [h["status"] for h in message["status_history"]] == ["queued", "routed", "expired"]

        # poison: a message no worker can decode goes to msgroute.dead with the reason, and is counted
        connection = await aio_pika.connect(engine.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.default_exchange.publish(aio_pika.Message(b"\x00 not an envelope"),
                                                   routing_key="msgroute.route")
            dead = await channel.get_queue("msgroute.dead")
            found = None
            for _ in range(60):
                found = await dead.get(fail=False, no_ack=True)
                if found:
                    break
                await asyncio.sleep(0.5)
        assert found is not None and found.body == b"\x00 not an envelope"
        assert "JSONDecodeError" in found.headers["x-death-reason"] or "decode" in found.headers["x-death-reason"]
        async with http.get(f"{engine.base_url}/metrics") as resp:
            assert 'msgroute_dead_letters_total{queue="msgroute.route"} 1.0' in await resp.text()

    # routes explain: candidates in score order and every exclusion with its reason
    out = engine.cli("routes", "explain", "--account", account["id"], "--channel", "sms", "--to",
                     "+14155550123", "--format", "json").stdout
    decision = orjson.loads(out)
    assert [c["carrier"] for c in decision["candidates"]] == ["sms-us", "sms-uk"]
    assert decision["candidates"][0]["cost"] == "0.0079"
    assert decision["excluded"] == []
    out = engine.cli("routes", "explain", "--account", account["id"], "--channel", "email", "--to",
                     "a@example.com", "--format", "json").stdout
    assert orjson.loads(out)["excluded"] == [{"carrier": "mail", "region": "eu-west",
                                              "reason": "region_not_allowed"}]
    text = engine.cli("routes", "explain", "--account", account["id"], "--channel", "sms", "--to",
                      "+447400123456").stdout
    assert "sms-uk" in text
    bad = engine.cli("routes", "explain", "--account", account["id"], "--channel", "sms", "--to", "12",
                     check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
