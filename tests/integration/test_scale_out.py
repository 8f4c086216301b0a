"""Scaling out: two `msgroute run --processes 2` (two gateways, four workers of each kind) against
one RabbitMQ vhost and one PostgreSQL database. Traffic through both gateways ends where it
should, once, and the two /metrics add up to what was sent."""
import asyncio
import collections

import aiohttp
import pytest

from tests.engine import PgDatabase, wait_terminal
from tests.integration.test_metrics import CONFIG, KINDS, FINAL, Scrape, scrape

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
PER_GATEWAY = 60


@pytest.fixture
def pg_url():
    with PgDatabase() as url:
        yield url


async def test_two_engines_share_one_broker_and_store(make_engine, pg_url):
    first = make_engine(pg_url, CONFIG, processes=2)
    second = make_engine(pg_url, CONFIG, processes=2)
    key = first.create_account("scaled")["api_key"]
    headers = {"Authorization": f"Bearer {key}"}
    plan = [i % len(KINDS) for i in range(2 * PER_GATEWAY)]

    async def send(http, base, index):
        async with http.post(f"{base}/v1/messages", json=KINDS[index][0], headers=headers) as resp:
            body = await resp.json()
            assert resp.status == 202, body
            return body["id"], index

    async with aiohttp.ClientSession() as http:
        sent = dict(await asyncio.gather(*(
            send(http, (first if n % 2 else second).base_url, index) for n, index in enumerate(plan))))
        assert len(sent) == len(plan)
        # either gateway answers for any message: they share the store
        done = await wait_terminal(http, second.base_url, key, list(sent), timeout=180)
        assert len(done) == len(sent)
        for message_id, message in done.items():
            assert message["status"] == FINAL[KINDS[sent[message_id]][1]], message

        reached = collections.Counter(KINDS[i][0]["channel"] for i in sent.values()
                                      if KINDS[i][1] in ("delivered", "undelivered"))
        accepted = collections.Counter(KINDS[i][0]["channel"] for i in sent.values())
        for _ in range(40):
            scrapes: list[Scrape] = [await scrape(http, e.base_url) for e in (first, second)]
            total = collections.Counter()
            usage = collections.Counter()
            for s in scrapes:
                total.update(s.by("msgroute_messages_accepted_total", "channel"))
                usage.update(s.by("msgroute_usage_records_total", "channel"))
            if total == accepted and usage == reached:
                break
            await asyncio.sleep(0.5)
        assert total == accepted
        assert usage == reached, "each message that reached a carrier has exactly one usage record"
        # every work queue has the consumers of both engines attached (the gateway polls the broker
        # every few seconds, so its figure may lag the workers that attached last)
        for _ in range(30):
            scraped = await scrape(http, first.base_url)
            consumers = {labels["queue"]: value for labels, value in scraped.samples["msgroute_queue_consumers"]}
            if consumers["msgroute.route"] >= 4 and consumers["msgroute.dispatch.sms-uk"] >= 4:
                break
            await asyncio.sleep(0.5)
        assert consumers["msgroute.route"] >= 4 and consumers["msgroute.dispatch.sms-uk"] >= 4, consumers
