"""The engine end to end through a real `msgroute run`, on both store backends."""
import asyncio
import random

import aio_pika
import aiohttp
import orjson
import pytest

from tests.engine import wait_terminal

CONFIG = """
[[regions]]
name = "uk-south"
jurisdictions = ["GB"]

[[regions]]
name = "eu-west"
jurisdictions = ["EU"]

[[regions]]
name = "us-east"
jurisdictions = ["US"]

[[carriers]]
name = "sms-uk"
channel = "sms"
adapter = "sandbox"
region = "uk-south"
priority = 1
settings = { latency_ms = 0, receipt_delay_ms = 20 }
rates = { "44" = "0.0300", "1" = "0.0450", currency = "USD" }

[[carriers]]
name = "sms-us"
channel = "sms"
adapter = "sandbox"
region = "us-east"
priority = 2
settings = { latency_ms = 0, receipt_delay_ms = 20 }
rates = { "1" = "0.0079", currency = "USD" }

[[carriers]]
name = "mail"
channel = "email"
adapter = "sandbox"
region = "eu-west"
settings = { latency_ms = 0, receipt_delay_ms = 20 }
rates = { default = "0.0001", currency = "USD" }

[[carriers]]
name = "push"
channel = "push"
adapter = "sandbox"
region = "eu-west"
settings = { latency_ms = 0, receipt_delay_ms = 20 }
rates = { default = "0.0000", currency = "USD" }

[routing]
retry_delays = [1]
max_attempts = 3
# magic sandbox addresses fail on purpose; this test is about their lifecycle, not circuits
circuit_failure_threshold = 100000
"""

# (request, predicted terminal status, reaches a carrier → has a usage record)
KINDS = [
    ({"channel": "sms", "to": "+447911123456", "body": "hello"}, "delivered", True),
    ({"channel": "sms", "to": "+14155550123", "body": "hello 👋"}, "delivered", True),
    ({"channel": "sms", "to": "+15005550001", "body": "x"}, "failed", False),
    ({"channel": "sms", "to": "+15005550002", "body": "x"}, "failed", False),
    ({"channel": "sms", "to": "+15005550003", "body": "x"}, "undelivered", True),
    ({"channel": "email", "to": "alice@example.com", "subject": "s", "body": "b"}, "delivered", True),
    ({"channel": "email", "to": "fail@example.com", "subject": "s", "body": "b"}, "failed", False),
    ({"channel": "email", "to": "flaky@example.com", "subject": "s", "body": "b"}, "failed", False),
    ({"channel": "email", "to": "bounce@example.com", "subject": "s", "body": "b"}, "undelivered", True),
    ({"channel": "push", "to": "token-abcdef123", "title": "t", "body": "b"}, "delivered", True),
    ({"channel": "push", "to": "fail-token-123", "title": "t", "body": "b"}, "failed", False),
    ({"channel": "push", "to": "flaky-token-123", "title": "t", "body": "b"}, "failed", False),
    ({"channel": "push", "to": "bounce-token-123", "title": "t", "body": "b"}, "undelivered", True),
]
TOTAL, OVER_AMQP = 1000, 200


def plan(total: int) -> list[int]:
    """Mostly ordinary messages with every magic address mixed in, in random order."""
    rng = random.Random(7)
    kinds = [i % len(KINDS) for i in range(len(KINDS) * 8)]
    kinds += [rng.choice([0, 1, 5, 9]) for _ in range(total - len(kinds))]
    rng.shuffle(kinds)
    return kinds


async def publish_amqp(url: str, items: list[tuple[int, dict]]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("msgroute.ingest")
        await asyncio.gather(*(exchange.publish(
            aio_pika.Message(orjson.dumps(body), content_type="application/json", user_id="guest",
                             message_id=f"amqp-{n}", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=f"send.{body['channel']}") for n, body in items))


async def list_all(http, base: str, key: str) -> list[dict]:
    out, cursor = [], None
    while True:
        url = f"{base}/v1/messages?limit=500" + (f"&cursor={cursor}" if cursor else "")
        async with http.get(url, headers={"Authorization": f"Bearer {key}"}) as resp:
            assert resp.status == 200
            page = await resp.json()
        out += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            return out


@pytest.mark.timeout(600)
async def test_mixed_traffic_reaches_predicted_statuses_with_one_usage_record_each(make_engine, store_url):
    engine = make_engine(store_url, CONFIG)
    account = engine.create_account("mixed", "--amqp-user", "guest")
    key = account["api_key"]
    kinds = plan(TOTAL)
    requests = [{**KINDS[k][0], "metadata": {"n": n}} for n, k in enumerate(kinds)]
    http_part, amqp_part = requests[:TOTAL - OVER_AMQP], requests[TOTAL - OVER_AMQP:]
    auth = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as http:
        ids = []
        # singles with idempotency keys, then batches
        for n, body in enumerate(http_part[:100]):
            async with http.post(f"{engine.base_url}/v1/messages", json=body,
                                 headers={**auth, "Idempotency-Key": f"k-{n}"}) as resp:
                assert resp.status == 202, await resp.text()
                ids.append((await resp.json())["id"])
        for start in range(100, len(http_part), 300):
            while True:  # a client that keeps to the account's rate limit, as a real one would
                async with http.post(f"{engine.base_url}/v1/messages/batch",
                                     json={"messages": http_part[start:start + 300]}, headers=auth) as resp:
                    if resp.status == 429:
                        await asyncio.sleep(float(resp.headers["Retry-After"]))
                        continue
                    assert resp.status == 202, await resp.text()
                    results = (await resp.json())["results"]
                    break
            assert all("id" in r for r in results), results
            ids += [r["id"] for r in results]
        await publish_amqp(engine.amqp_url, [(TOTAL - OVER_AMQP + i, b) for i, b in enumerate(amqp_part)])

        # idempotent retries: same key → same id, nothing new (HTTP); same message_id → nothing new (AMQP)
        for n in (0, 1, 2):
            async with http.post(f"{engine.base_url}/v1/messages", json=http_part[n],
                                 headers={**auth, "Idempotency-Key": f"k-{n}"}) as resp:
                assert resp.status == 202
                assert resp.headers.get("Idempotent-Replayed") == "true"
                assert (await resp.json())["id"] == ids[n]
        # twice at once: both copies likely share one insert transaction, and still count once
        await publish_amqp(engine.amqp_url, [(TOTAL - OVER_AMQP, amqp_part[0])] * 2)

        every = await list_all(http, engine.base_url, key)
        for _ in range(120):  # AMQP ingest is asynchronous: wait until it has stored everything
            if len(every) >= TOTAL:
                break
            await asyncio.sleep(0.5)
            every = await list_all(http, engine.base_url, key)
        await asyncio.sleep(1)  # a duplicate would show up now
        every = await list_all(http, engine.base_url, key)
        assert len(every) == TOTAL, f"expected exactly {TOTAL} messages, found {len(every)}"
        by_n = {m["metadata"]["n"]: m["id"] for m in every}
        assert sorted(by_n) == list(range(TOTAL))
        final = await wait_terminal(http, engine.base_url, key, list(by_n.values()), timeout=300)
    assert len(final) == TOTAL, f"{TOTAL - len(final)} messages did not reach a terminal status"

    wrong = []
    for n, kind in enumerate(kinds):
        message = final[by_n[n]]
        if message["status"] != KINDS[kind][1]:
            wrong.append((n, KINDS[kind][0]["to"], message["status"], message["status_history"]))
    assert not wrong, wrong[:5]

    usage = [orjson.loads(line) for line in engine.cli("usage", "export", "--format", "jsonl").stdout.splitlines()
             if line.strip()]
    per_message: dict[str, int] = {}
    for record in usage:
        per_message[record["message_id"]] = per_message.get(record["message_id"], 0) + 1
    expected = {by_n[n] for n, kind in enumerate(kinds) if KINDS[kind][2]}
    assert set(per_message) == expected
    assert set(per_message.values()) == {1}
    for record in usage:
        message = final[record["message_id"]]
        assert record["status"] == message["status"]
        assert record["carrier"] == message["carrier"]
    assert engine.stop() == 0


async def test_accounts_never_see_each_others_messages(make_engine, sqlite_url):
    engine = make_engine(sqlite_url, CONFIG)
    alice, bob = engine.create_account("alice")["api_key"], engine.create_account("bob")["api_key"]
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{engine.base_url}/v1/messages", json=KINDS[0][0],
                             headers={"Authorization": f"Bearer {alice}"}) as resp:
            message_id = (await resp.json())["id"]
        async with http.get(f"{engine.base_url}/v1/messages/{message_id}",
                            headers={"Authorization": f"Bearer {bob}"}) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "not_found"
        async with http.get(f"{engine.base_url}/v1/messages",
                            headers={"Authorization": f"Bearer {bob}"}) as resp:
            assert (await resp.json())["data"] == []
        async with http.get(f"{engine.base_url}/v1/messages/{message_id}",
                            headers={"Authorization": f"Bearer {alice}"}) as resp:
            assert resp.status == 200
            assert (await resp.json())["id"] == message_id
