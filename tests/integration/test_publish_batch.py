"""Concurrent publishes share socket writes (workers/publish_batch.py) and still each get their own
confirm: every one reaches the queue once, an unroutable one among them fails alone, and a caller
that gives up before its turn is not sent, without disturbing the delivery tags after it."""
import asyncio
import subprocess

import pytest

from router.settings import from_dict
from workers import amqp
from workers.publish_batch import supported

QUEUE = "test.publish-batch"


@pytest.fixture
async def channel(vhost):
    settings = from_dict({"broker": {"url": vhost}})
    connection = await amqp.connect(settings, "publish-batch")
    try:
        channel = await amqp.open_channel(connection)
        await channel.declare_queue(QUEUE, durable=True, arguments=amqp.QUORUM)
        yield channel
    finally:
        await connection.close()


def count_writes(underlay) -> list[int]:
    """Payloads the channel hands to the connection's writer (one socket write each)."""
    writes: list[int] = []
    put = underlay.write_queue.put

    async def counting_put(frame):
        writes.append(len(frame.payload))
        return await put(frame)

    underlay.write_queue.put = counting_put
    return writes


async def drain(channel, expected: int) -> list[bytes]:
    queue = await channel.declare_queue(QUEUE, durable=True, arguments=amqp.QUORUM)
    bodies = []
    for _ in range(50):
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            bodies.append(message.body)
        if len(bodies) >= expected:
            break
        await asyncio.sleep(0.1)
    return bodies


async def test_concurrent_publishes_are_written_together_and_each_confirmed(channel):
    underlay = await channel.get_underlay_channel()
    assert supported(underlay), "aiormq changed: the Publisher fell back to one write per publish"
    writes = count_writes(underlay)
    publisher = amqp.Publisher(channel, timeout=10)
    sent = [f"message {n}".encode() for n in range(500)]

    await asyncio.gather(*(publisher.publish("", QUEUE, body) for body in sent))
    publish_writes = len(writes)

    assert sorted(await drain(channel, len(sent))) == sorted(sent)  # each once, none lost
    assert 0 < publish_writes < len(sent) / 5, f"{publish_writes} writes for {len(sent)} publishes"


async def test_an_unroutable_publish_fails_alone_in_its_batch(channel):
    publisher = amqp.Publisher(channel, timeout=10)
    routable = [publisher.publish("", QUEUE, f"ok {n}".encode()) for n in range(20)]
    unroutable = publisher.publish("", "test.no-such-queue", b"lost?")

    results = await asyncio.gather(*routable, unroutable, return_exceptions=True)

    assert results[:20] == [None] * 20
    assert isinstance(results[20], amqp.PublishFailed) and "not confirmed" in str(results[20])
    assert len(await drain(channel, 20)) == 20


async def test_a_caller_that_gives_up_before_its_turn_is_not_sent(channel):
    underlay = await channel.get_underlay_channel()
    publisher = amqp.Publisher(channel, timeout=0.3)
    async with underlay.lock:  # the channel is busy: the batch cannot be queued yet
        with pytest.raises(amqp.PublishUncertain):
            await publisher.publish("", QUEUE, b"gave up")
    # the tags stay in step with the broker's: later publishes are confirmed as theirs
    await asyncio.gather(*(publisher.publish("", QUEUE, f"after {n}".encode()) for n in range(10)))

    bodies = await drain(channel, 10)
    assert sorted(bodies) == sorted(f"after {n}".encode() for n in range(10))


async def test_a_publish_after_a_reconnect_uses_the_new_channel(channel):
    publisher = amqp.Publisher(channel, timeout=10)
    await publisher.publish("", QUEUE, b"before")
    before = await channel.get_underlay_channel()
    await before.close()  # the robust channel reopens a new underlying channel
    for _ in range(50):
        if (await channel.get_underlay_channel()) is not before and not channel.is_closed:
            break
        await asyncio.sleep(0.1)
    await publisher.publish("", QUEUE, b"after")
    assert sorted(await drain(channel, 2)) == [b"after", b"before"]


async def held_by_broker(vhost_url: str) -> int:
    """Messages the broker still holds for the queue, ready or delivered but unacked."""
    vhost = vhost_url.rsplit("/", 1)[1]
    out = await asyncio.to_thread(subprocess.run, ["rabbitmqctl", "list_queues", "-q", "-p", vhost, "--no-table-headers",
                                                    "name", "messages"], capture_output=True, text=True, timeout=60)
    return next(int(count) for name, count in (line.split() for line in out.stdout.splitlines()) if name == QUEUE)


async def test_concurrent_acks_are_written_together_and_take_effect(vhost, channel):
    queue = await channel.declare_queue(QUEUE, passive=True)
    publisher = amqp.Publisher(channel, timeout=10)
    await asyncio.gather(*(publisher.publish("", QUEUE, f"m{n}".encode()) for n in range(101)))
    deliveries: list = []
    all_delivered = asyncio.Event()

    async def on_message(message) -> None:
        deliveries.append(message)
        if len(deliveries) == 101:
            all_delivered.set()

    await queue.consume(on_message)  # as the workers consume
    await asyncio.wait_for(all_delivered.wait(), 10)
    writes = count_writes(await channel.get_underlay_channel())

    requeued = deliveries.pop()
    await asyncio.gather(*(amqp._settle(m, ok=True) for m in deliveries), amqp._settle(requeued, ok=False))
    settle_writes = len(writes)
    # the connection stays open: only the requeued one (delivered again to this consumer) is held
    held = []
    for _ in range(20):
        held.append(await held_by_broker(vhost))
        if held[-1] == 1:
            break
        await asyncio.sleep(0.5)

    assert 0 < settle_writes < 101 / 5, f"{settle_writes} writes for 101 acks"
    assert held[-1] == 1, f"the broker still holds {held} messages"
