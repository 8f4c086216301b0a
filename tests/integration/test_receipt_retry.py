"""A webhook call can carry many receipts (SendGrid, the sandbox). When some of them arrive before
their message's `sent` is recorded, only those go round the retry tier: the ones already known
are applied, and counted, once."""
import aiohttp
import aio_pika
import orjson
from prometheus_client import REGISTRY

from carriers.base import InboundRequest
from carriers.sandbox import DEFAULT_SECRET, sign
from router import clock, requests, topology
from router.messages import Status, Transition
from workers import amqp
from workers.adapters import open_adapters
from workers.gateway.webhooks import encode_inbound
from workers.health_feed import HealthFeed
from workers.ingest import intake
from tests.integration.worker_setup import worker_parts
from workers.status import KIND_HEADER, RECEIPT_RETRY_KIND, RECEIPT_TRIES_HEADER, StatusWorker

CARRIER = "sms-uk"


def delivered_count() -> float:
    return REGISTRY.get_sample_value("msgroute_receipts_total", {"carrier": CARRIER, "status": "delivered"}) or 0.0


def sent(envelope, carrier_id: str) -> Transition:
    return Transition(message_id=envelope.id, status=Status.SENT, occurred_at=clock.now_iso(), channel="sms",
                      account_id=envelope.account_id, carrier=CARRIER, region="uk-south",
                      carrier_message_id=carrier_id, attempt=1, units=1, cost="0.03", price="0.04",
                      currency="USD", destination="GB")


async def fetched(channel, body: bytes, headers: dict | None = None):
    """`body` as the status worker gets it: a real delivery from the broker."""
    queue = await channel.declare_queue(exclusive=True)
    await channel.default_exchange.publish(aio_pika.Message(body, headers=headers or {}), routing_key=queue.name)
    return await queue.get(timeout=5)


async def test_only_the_unknown_receipts_of_a_webhook_call_are_retried(make_engine, sqlite_url):
    async with worker_parts(make_engine, sqlite_url, "receipt-retry", "test receipt retry") as \
            (settings, store, channel, account), aiohttp.ClientSession() as http, \
            open_adapters(settings, http) as adapters:
        worker = StatusWorker(settings, store, amqp.Publisher(channel), adapters, HealthFeed(settings))
        request = requests.parse({"channel": "sms", "to": "+447911123456", "body": "hello"})
        early, late = (intake.accept(request, account["id"]) for _ in range(2))
        await store.insert_messages([early[1], late[1]])
        early, late = early[0], late[0]
        await worker.apply([sent(early, "SB-early")])  # `late`'s send is not recorded yet

        body = orjson.dumps([{"id": "SB-early", "ref": early.id, "status": "delivered", "error": None},
                             {"id": "SB-late", "ref": late.id, "status": "delivered", "error": None}])
        call = InboundRequest("POST", f"http://127.0.0.1/webhooks/dlr/{CARRIER}",
                              {"x-sandbox-signature": sign(DEFAULT_SECRET, body)}, body)
        counted = delivered_count()
        await worker.handle_receipts([await fetched(channel, encode_inbound(CARRIER, call, "receipt"))])

        states = await store.current_states([early.id, late.id])
        assert (states[early.id]["status"], states[late.id]["status"]) == ("delivered", "queued")
        assert delivered_count() - counted == 1
        retry_queue = await channel.declare_queue(topology.retry_queue(amqp.RECEIPT_RETRY_DELAY), passive=True)
        retried = await retry_queue.get(timeout=5)
        await retried.ack()
        assert await retry_queue.get(fail=False, timeout=5) is None
        assert retried.headers[KIND_HEADER] == RECEIPT_RETRY_KIND and retried.headers[RECEIPT_TRIES_HEADER] == 1
        assert [r["carrier_message_id"] for r in orjson.loads(retried.body)["receipts"]] == ["SB-late"]

        await worker.apply([sent(late, "SB-late")])
        await worker.handle_receipts([await fetched(channel, retried.body, dict(retried.headers))])
        states = await store.current_states([early.id, late.id])
        assert (states[early.id]["status"], states[late.id]["status"]) == ("delivered", "delivered")
        assert delivered_count() - counted == 2
