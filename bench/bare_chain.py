"""The bare baseline for end-to-end throughput: a chain of three aio-pika hops, nothing else.

    ingest -> [hop] -> route -> [hop] -> dispatch -> [hop] -> usage -> [sink]

Each hop consumes a message, publishes it (persistent, mandatory) to the next queue,
waits for the broker's confirm, then acks; many messages are in flight at once (prefetch).
Queues are durable quorum queues, like the engine's. The sink acks what reaches `usage`
and prints the time it saw the n-th message. One OS process per hop and per sink, on uvloop.

    python bench/bare_chain.py hop  --url AMQP_URL --source Q --target Q
    python bench/bare_chain.py sink --url AMQP_URL --source Q --report N [N ...]

`run_chain()` sets the whole chain up in a vhost, pushes messages through it and times them.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import subprocess
import sys
import time
from dataclasses import dataclass

import aio_pika
import uvloop

QUEUES = ["bare.ingest", "bare.route", "bare.dispatch", "bare.usage"]
QUORUM = {"x-queue-type": "quorum"}
PREFETCH = 100


async def hop(url: str, source: str, target: str) -> None:
    connection = await aio_pika.connect(url)
    consume = await connection.channel(publisher_confirms=False)
    await consume.set_qos(prefetch_count=PREFETCH)
    publish = await connection.channel(publisher_confirms=True)
    queue = await consume.get_queue(source, ensure=False)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await publish.default_exchange.publish(
            aio_pika.Message(message.body, content_type="application/json",
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            target, mandatory=True, timeout=5)
        await message.ack()

    await queue.consume(on_message)
    await asyncio.Future()


async def sink(url: str, source: str, report: list[int]) -> None:
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=False)
    await channel.set_qos(prefetch_count=PREFETCH * 3)
    queue = await channel.get_queue(source, ensure=False)
    seen = 0
    targets = sorted(report)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal seen
        await message.ack()
        seen += 1
        if targets and seen >= targets[0]:
            targets.pop(0)
            print(f"reached {seen} {time.monotonic():.6f}", flush=True)

    await queue.consume(on_message)
    print("ready", flush=True)
    await asyncio.Future()


# --- orchestration (used by bench/e2e.py) ----------------------------------------------------


@dataclass
class ChainRun:
    seconds: float
    messages: int
    cpu_seconds: dict[str, float]  # process name (and `broker`) -> CPU seconds during the timed part


async def declare(url: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in QUEUES:
            await channel.declare_queue(name, durable=True, arguments=QUORUM)


async def publish_all(url: str, bodies: list[bytes], window: int = 500) -> None:
    """Publish to the chain's first queue, persistent and confirmed, `window` confirms in flight."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        slots = asyncio.Semaphore(window)

        async def one(body: bytes) -> None:
            try:
                await channel.default_exchange.publish(
                    aio_pika.Message(body, content_type="application/json",
                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    QUEUES[0], mandatory=True, timeout=30)
            finally:
                slots.release()

        tasks = []
        for body in bodies:
            await slots.acquire()
            tasks.append(asyncio.create_task(one(body)))
        await asyncio.gather(*tasks)


def run_chain(url: str, messages: int, size: int, processes: int = 1, warmup: int = 200) -> ChainRun:
    """Start the chain (`processes` per hop, one sink), warm it up, time `messages` through it."""
    from harness import broker_pid, cpu_seconds  # here, so hop and sink processes import no more than they use
    uvloop.run(declare(url))
    script = [sys.executable, __file__]
    procs: dict[str, subprocess.Popen] = {}
    for source, target in itertools.pairwise(QUEUES):
        for n in range(processes):
            procs[f"hop {source.split('.')[1]}->{target.split('.')[1]} #{n}"] = subprocess.Popen(
                [*script, "hop", "--url", url, "--source", source, "--target", target])
    sink_proc = subprocess.Popen([*script, "sink", "--url", url, "--source", QUEUES[-1], "--report",
                                  str(warmup), str(warmup + messages)], stdout=subprocess.PIPE, text=True)
    procs["sink"] = sink_proc
    try:
        assert sink_proc.stdout.readline().strip() == "ready"
        body = b'{"payload": "' + b"x" * max(0, size - 15) + b'"}'  # JSON of `size` bytes
        uvloop.run(publish_all(url, [body] * warmup))
        sink_proc.stdout.readline()  # warm-up through
        pids = {name: p.pid for name, p in procs.items()} | {"broker": broker_pid()}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.monotonic()
        uvloop.run(publish_all(url, [body] * messages))
        finished = float(sink_proc.stdout.readline().split()[2])
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        return ChainRun(finished - started, messages, cpu)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=("hop", "sink"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--target")
    parser.add_argument("--report", type=int, nargs="*", default=[])
    args = parser.parse_args()
    if args.role == "hop":
        uvloop.run(hop(args.url, args.source, args.target))
    else:
        uvloop.run(sink(args.url, args.source, args.report))


if __name__ == "__main__":
    main()
