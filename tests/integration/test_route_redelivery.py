"""A message that comes back to the route worker as a redelivery (its confirm timed out, or the
worker died before its ack) is routed again only if its route decision was never recorded:
otherwise the dispatch worker would get a second copy and the decision would be counted twice."""
import aio_pika
from prometheus_client import REGISTRY

from router import codec, requests
from router.messages import Status
from router.settings import load
from workers import amqp
from workers.health_feed import HealthFeed
from workers.ingest import intake
from workers.route import RouteWorker
from workers.store import open_store

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


async def test_a_redelivery_is_routed_again_only_if_its_route_was_not_recorded(make_engine, sqlite_url):
    engine = make_engine(sqlite_url, start=False)
    engine.cli("migrate")
    account = engine.create_account("redelivery")
    settings = load(engine.config_path, env=engine.env)
    store = await open_store(sqlite_url)
    connection = await amqp.connect(settings, "test route redelivery")
    try:
        channel = await amqp.open_channel(connection)
        await amqp.declare_topology(channel, settings)
        worker = RouteWorker(settings, store, amqp.Publisher(channel), HealthFeed(settings))
        request = requests.parse({"channel": "sms", "to": "+447911123456", "body": "hello"})
        never_routed, already_routed = intake.accept(request, account["id"]), intake.accept(request, account["id"])
        await store.insert_messages([never_routed[1], {**already_routed[1], "status": Status.ROUTED}])
        counted = routed_count()

        await worker.handle_envelope(await redelivered_copy(channel, codec.dumps(already_routed[0])))
        assert await take_all(channel, DISPATCH_QUEUE) == [], "an already routed message was routed again"
        assert routed_count() == counted

        await worker.handle_envelope(await redelivered_copy(channel, codec.dumps(never_routed[0])))
        dispatched = [codec.decode_envelope(body).id for body in await take_all(channel, DISPATCH_QUEUE)]
        assert dispatched == [never_routed[0].id], "a redelivery never routed before was not routed"
        assert routed_count() == counted + 1
    finally:
        await connection.close()
        await store.close()

