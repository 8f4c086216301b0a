"""Peak memory of every engine process while a large backlog waits: prefetch, not backlog, must set it.

For each case an isolated `msgroute run` is started with one slow sandbox SMS carrier
(`latency_ms = 1000`, so dispatch sends about `concurrency` messages per second), then
the backlog is published to msgroute.ingest as fast as the broker confirms. It queues
first in front of the route worker (msgroute.ingest.amqp), then, once routed, in front of
the dispatch worker (msgroute.dispatch.bench-sms). The case ends when the route and status
queues are empty again: by then every worker has worked with the whole backlog waiting.
Each process's resident memory is sampled from /proc every second; "peak" is the kernel's
high-water mark (VmHWM). The prefetch in force is printed next to it.

    python bench/memory.py [--cases 10000:50,100000:50,20000:500]   (backlog:carrier concurrency)
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import aio_pika
import orjson
import uvloop

from harness import (BENCH_SETTINGS, DEFAULT_ROUTING, ROOT, BenchEngine, dump_json, machine_line, memory_kib,
                     send_request, table)

CARRIER = """
[[regions]]
name = "uk-south"
jurisdictions = ["GB"]

[[carriers]]
name = "bench-sms"
channel = "sms"
adapter = "sandbox"
region = "uk-south"
concurrency = {concurrency}
settings = {{ latency_ms = 1000, receipt_delay_ms = 20 }}
rates = {{ "44" = "0.0300", currency = "USD" }}
"""
WATCHED = ["msgroute.ingest.amqp", "msgroute.route", "msgroute.status", "msgroute.receipts",
           "msgroute.dispatch.bench-sms"]
PREFETCH = {"gateway": "-", "worker route": "200 (route) + 200 (AMQP ingest)",
            "worker status": "1000 + 500 + 100", "worker dispatch": "{concurrency} (carrier concurrency)"}


async def publish_backlog(url: str, count: int, window: int = 1000) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("msgroute.ingest", ensure=False)
        slots = asyncio.Semaphore(window)

        async def one(i: int) -> None:
            try:
                await exchange.publish(aio_pika.Message(
                    orjson.dumps(send_request(i)), content_type="application/json", user_id="guest",
                    message_id=uuid.uuid4().hex, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    "send.sms", mandatory=True, timeout=60)
            finally:
                slots.release()

        tasks = []
        for i in range(count):
            await slots.acquire()
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)


async def depths(channel, names: list[str]) -> dict[str, int]:
    out = {}
    for name in names:
        queue = await channel.declare_queue(name, passive=True)
        out[name] = queue.declaration_result.message_count
    return out


async def watch(engine: BenchEngine, backlog: int, timeout: float) -> dict:
    pids = {pid: name for pid, name in engine.child_pids().items() if name != "run"}
    idle = {name: memory_kib(pid)[0] for pid, name in pids.items()}
    connection = await aio_pika.connect(engine.amqp_url)
    async with connection:
        channel = await connection.channel()
        publisher = asyncio.create_task(publish_backlog(engine.amqp_url, backlog))
        started = time.monotonic()
        max_depth = {name: 0 for name in WATCHED}
        max_rss = dict.fromkeys(idle, 0)
        published_after = None
        while time.monotonic() - started < timeout:
            await asyncio.sleep(1)
            now = await depths(channel, WATCHED)
            for name, depth in now.items():
                max_depth[name] = max(max_depth[name], depth)
            for pid, name in pids.items():
                max_rss[name] = max(max_rss[name], memory_kib(pid)[0])
            if publisher.done() and published_after is None:
                publisher.result()
                published_after = time.monotonic() - started
            if published_after and now["msgroute.ingest.amqp"] == 0 and now["msgroute.status"] == 0:
                break
        else:
            raise TimeoutError(f"backlog not routed after {timeout:.0f}s: {now}")
        final = {name: memory_kib(pid) for pid, name in pids.items()}
        alive = set(engine.child_pids())
    return {"idle_kib": idle, "max_sampled_kib": max_rss, "end_kib": {n: v[0] for n, v in final.items()},
            "peak_kib": {n: v[1] for n, v in final.items()}, "max_depth": max_depth,
            "published_seconds": published_after, "routed_seconds": time.monotonic() - started,
            "restarted": sorted(name for pid, name in pids.items() if pid not in alive)}


def run_case(backlog: int, concurrency: int, workdir: Path, code: Path) -> dict:
    config = BENCH_SETTINGS + CARRIER.format(concurrency=concurrency) + DEFAULT_ROUTING
    engine = BenchEngine(workdir, config=config, code=code)
    try:
        engine.start()
        return uvloop.run(watch(engine, backlog, timeout=max(600, backlog / 50)))
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="10000:50,100000:50,20000:500")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="import the engine from this checkout (e.g. a `git worktree` of an older commit)")
    args = parser.parse_args()
    print(f"{machine_line()}; engine code from {args.code}")
    results = []
    for case in args.cases.split(","):
        backlog, concurrency = (int(v) for v in case.split(":"))
        with tempfile.TemporaryDirectory(prefix="msgroute-bench-") as tmp:
            result = run_case(backlog, concurrency, Path(tmp), args.code)
        results.append({"backlog": backlog, "concurrency": concurrency, **result})
        print(f"\nbacklog {backlog:,}, carrier concurrency {concurrency}: published in "
              f"{result['published_seconds']:.0f}s, routed in {result['routed_seconds']:.0f}s; largest queues: "
              + ", ".join(f"{q.removeprefix('msgroute.')} {d:,}" for q, d in result["max_depth"].items() if d))
        rows = [[name, PREFETCH.get(name, "?").format(concurrency=concurrency), result["idle_kib"][name] / 1024,
                 result["peak_kib"][name] / 1024, result["end_kib"][name] / 1024]
                for name in sorted(result["peak_kib"])]
        print(table(["process", "prefetch", "idle MiB", "peak MiB", "end MiB"], rows))
        if result["restarted"]:
            print(f"restarted during the case: {result['restarted']}")
    print(f"\n{machine_line()}")
    if args.json:
        dump_json(args.json, results)


if __name__ == "__main__":
    main()
