"""Client CPU per confirmed, persistent publish: the engine's Publisher next to the bare alternatives.

Publishes are the engine's largest per-message cost (about ten per delivered message), so
this measures one in isolation, in one process, rounds interleaved:

- `engine Publisher`: workers.amqp.Publisher.publish, as every engine process uses it;
- `aio-pika + wait_for`: aio_pika.Message + Exchange.publish inside asyncio.wait_for (how
  the Publisher published before it went to the aiormq channel directly);
- `aio-pika`: aio_pika.Message + Exchange.publish (what bench/bare_chain.py does);
- `aiormq`: the underlying channel's basic_publish with prebuilt properties.

Each round publishes `--messages` messages of `--size` bytes to a quorum queue, 100 in flight.

    python bench/publish.py [--messages 5000] [--rounds 3] [--size 613]
"""
from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time

import aio_pika
import aiormq
import uvloop

from harness import Vhost, machine_line, table
from workers.amqp import Publisher

QUEUE = "bench.publish"


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(url: str, messages: int, rounds: int, size: int) -> dict[str, list[tuple[float, float]]]:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        body = b"x" * size
        publisher = Publisher(channel, 5.0)
        underlay = await channel.get_underlay_channel()
        properties = aiormq.spec.Basic.Properties(content_type="application/json", delivery_mode=2, headers={})

        def message() -> aio_pika.Message:
            return aio_pika.Message(body, content_type="application/json", headers={},
                                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT)

        variants = {
            "engine Publisher": lambda: publisher.publish("", QUEUE, body),
            "aio-pika + wait_for": lambda: asyncio.wait_for(
                channel.default_exchange.publish(message(), QUEUE, mandatory=True, timeout=5), 5),
            "aio-pika": lambda: channel.default_exchange.publish(message(), QUEUE, mandatory=True, timeout=5),
            "aiormq": lambda: underlay.basic_publish(body, exchange="", routing_key=QUEUE, properties=properties,
                                                     mandatory=True),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        slots = asyncio.Semaphore(100)

        async def one(publish) -> None:
            async with slots:
                await publish()

        for _ in range(rounds + 1):  # the first round warms up and is not kept
            for name, publish in variants.items():
                cpu_before, started = cpu(), time.perf_counter()
                await asyncio.gather(*(one(publish) for _ in range(messages)))
                elapsed = time.perf_counter() - started
                results[name].append((1e6 * (cpu() - cpu_before) / messages, messages / elapsed))
            await queue.purge()
        return {name: runs[1:] for name, runs in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=613)
    args = parser.parse_args()
    print(f"{args.messages} publishes per round, {args.rounds} rounds; {machine_line()}")
    with Vhost() as url:
        results = uvloop.run(measure(url, args.messages, args.rounds, args.size))
    engine = statistics.median(c for c, _ in results["engine Publisher"])
    print(table(["variant", "client CPU us/publish (median)", "min", "max", "publishes/s (median)", "vs engine"],
                [[name, statistics.median(c for c, _ in runs), min(c for c, _ in runs), max(c for c, _ in runs),
                  statistics.median(r for _, r in runs), statistics.median(c for c, _ in runs) / engine]
                 for name, runs in results.items()]))
    print(machine_line())


if __name__ == "__main__":
    main()
