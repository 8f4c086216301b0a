"""A message that comes back to the route worker as a redelivery (its confirm timed out, or the
worker died before its ack): routed as usual if nothing was recorded; sent to dispatch again but
not counted twice if only `routed` was recorded (its dispatch copy may have been refused); left
alone once a send was recorded."""
import aio_pika
from prometheus_client import REGISTRY

from router import codec, requests
from router.messages import Status
from workers import amqp
from workers.health_feed import HealthFeed
from workers.ingest import intake
from tests.integration.worker_setup import worker_parts
from workers.route import RouteWorker

DISPATCH_QUEUE = "msgroute.dispatch.sms-uk"  # where a +44 number goes with the sandbox carriers


def routed_count() -> float:
    return REGISTRY.get_sample_value("msgroute_messages_routed_total",
                                     {"channel": "sms", "carrier": "sms-uk", "region": "uk-south"}) or 0.0


async def redelivered_copy(channel, body: bytes):
    """A real broker redelivery of `body`: delivered once, requeued, delivered again."""
    queue = await channel.declare_queue(exclusive=True)
    await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue.name)
    first = await queue.get(timeout=5)
    await first.nack(requeue=True)
    again = await queue.get(timeout=5)
    assert again.redelivered
    return again


async def take_all(channel, queue: str) -> list[bytes]:
    """Every message waiting in `queue`, taken off it."""
    taken = []
    queue = await channel.declare_queue(queue, passive=True)
    while (message := await queue.get(fail=False, timeout=5)) is not None:
        await message.ack()
        taken.append(message.body)
    return taken


async def test_a_redelivery_is_routed_again_only_while_no_send_was_recorded(make_engine, sqlite_url):
    async with worker_parts(make_engine, sqlite_url, "redelivery", "test route redelivery") as \
            (settings, store, channel, account):
        worker = RouteWorker(settings, store, amqp.Publisher(channel), HealthFeed(settings))
        request = requests.parse({"channel": "sms", "to": "+447911123456", "body": "hello"})
        recorded = {}  # status recorded before the redelivery -> envelope
        for status in (Status.QUEUED, Status.ROUTED, Status.SENT):
            envelope, row = intake.accept(request, account["id"])
            await store.insert_messages([{**row, "status": status}])
            recorded[status] = envelope

        async def redeliver(status: Status) -> tuple[list[str], float]:
            """What the route worker sent to dispatch for it, and how many decisions it counted."""
            counted = routed_count()
            await worker.handle_envelope(await redelivered_copy(channel, codec.dumps(recorded[status])))
            dispatched = [codec.decode_envelope(body).id for body in await take_all(channel, DISPATCH_QUEUE)]
            return dispatched, routed_count() - counted

        assert await redeliver(Status.QUEUED) == ([recorded[Status.QUEUED].id], 1)
        assert await redeliver(Status.ROUTED) == ([recorded[Status.ROUTED].id], 0)
        assert await redeliver(Status.SENT) == ([], 0)
