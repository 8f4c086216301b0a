"""Retries through the delay tiers on a real broker: with jitter, one burst of retries comes back
spread over the last fifth of the delay, never earlier and never later than the delay itself."""
import asyncio
import time

import aio_pika

from router import topology
from router.settings import from_dict
from workers import amqp

DELAY = 2.0  # a configured retry delay (so its tier has jitter lanes)
EARLIEST = DELAY * (1 - topology.RETRY_JITTER)


async def _arrivals(vhost: str, jitter: bool, count: int = 40) -> list[float]:
    settings = from_dict({"broker": {"url": vhost}, "routing": {"retry_delays": [DELAY]}})
    connection = await aio_pika.connect(vhost)
    async with connection:
        channel = await amqp.open_channel(connection)
        await amqp.declare_topology(channel, settings)
        target = await channel.declare_queue(f"jitter-test-{jitter}", durable=True, arguments=amqp.QUORUM)
        publisher = amqp.Publisher(channel)
        started = time.monotonic()
        await asyncio.gather(*(publisher.publish_later(DELAY, target.name, b"{}", jitter=jitter)
                               for _ in range(count)))
        arrivals = []
        async with target.iterator() as messages:
            async for message in messages:
                arrivals.append(time.monotonic() - started)
                await message.ack()
                if len(arrivals) == count:
                    break
        await target.delete(if_unused=False, if_empty=False)
    return arrivals


async def test_jittered_retries_spread_within_the_delay(vhost):
    arrivals = await _arrivals(vhost, jitter=True)
    assert min(arrivals) >= EARLIEST - 0.05, arrivals
    assert max(arrivals) <= DELAY + 0.5, arrivals  # the tier's own TTL is the upper bound (plus broker slack)
    # 40 retries over five lanes: all of them in one or two adjacent lanes is a chance of about 1e-15
    assert max(arrivals) - min(arrivals) >= (DELAY - EARLIEST) / 2, arrivals  # spread, not one burst


async def test_without_jitter_the_tier_delay_holds(vhost):
    arrivals = await _arrivals(vhost, jitter=False, count=10)
    assert min(arrivals) >= DELAY - 0.05, arrivals
