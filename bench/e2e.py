"""End-to-end throughput of `msgroute run` next to a bare aio-pika chain, measured in the same run.

Each repeat measures, one after the other on the same machine:

- bare chain: bench/bare_chain.py, three hops (ingest -> route -> dispatch -> usage) plus a
  sink, as many processes as the engine runs, messages the size of a routed envelope;
- engine, HTTP batch: POST /v1/messages/batch (100 per request, 4 in flight);
- engine, HTTP single: POST /v1/messages (32 in flight);
- engine, AMQP: published to msgroute.ingest (routing key send.sms, user_id set, confirmed).

An engine message counts when the store shows it `delivered` and its usage record
`delivered`: accepted, routed, sent to the sandbox carrier, receipt back through the
gateway's webhook, status and usage written. Every mode gets a fresh engine (own vhost,
own SQLite file) and a warm-up of 200 messages before the clock starts; the time runs
from the first message offered to the last one complete.

The machine is shared, so each engine mode is measured right after a bare chain of its
own, and its ratio is to that one. CPU columns: CPU time the Python processes used during
the timed part, per message (the engine's processes or the chain's hops and sink); the
CPU ratio, bare / engine, is what the throughput ratio would be if both were CPU-bound on
an otherwise idle machine. The broker's CPU is shown too, but the broker is shared with
whatever else runs on it, so that column is only clean on a quiet machine.

    python bench/e2e.py [--messages 4000] [--repeats 3] [--processes 1] [--modes batch,single,amqp]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import aio_pika
import orjson
import uvloop

import bare_chain
import loadgen
from harness import (ROOT, BenchEngine, StoreProgress, Vhost, broker_pid, code_line, cpu_seconds, dump_json,
                     machine_line, routed_envelope_size, send_request, table)

BATCH_SIZE, BATCH_IN_FLIGHT, SINGLE_IN_FLIGHT = 100, 4, 32
WARMUP = 200
MODES = {"batch": "engine, HTTP batch", "single": "engine, HTTP single", "amqp": "engine, AMQP ingest"}


# each sender offers messages first..first+count-1 and returns how many 503 answers it sent again

async def send_http_batches(engine: BenchEngine, first: int, count: int) -> int:
    auth = {"Authorization": f"Bearer {engine.api_key}"}
    requests = [loadgen.post("/v1/messages/batch", {"messages": [send_request(i) for i in range(
        start, min(first + count, start + BATCH_SIZE))]}, engine.port, auth)
        for start in range(first, first + count, BATCH_SIZE)]
    result = await loadgen.closed_loop(engine.port, requests, BATCH_IN_FLIGHT, retry_unavailable=True)
    assert result.statuses == {202: len(requests)}, result.statuses
    return result.retried


async def send_http_singles(engine: BenchEngine, first: int, count: int) -> int:
    auth = {"Authorization": f"Bearer {engine.api_key}"}
    requests = [loadgen.post("/v1/messages", send_request(i), engine.port, auth) for i in range(first, first + count)]
    result = await loadgen.closed_loop(engine.port, requests, SINGLE_IN_FLIGHT, retry_unavailable=True)
    assert result.statuses == {202: count}, result.statuses
    return result.retried


async def send_amqp(engine: BenchEngine, first: int, count: int, window: int = 500) -> int:
    connection = await aio_pika.connect(engine.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("msgroute.ingest", ensure=False)
        slots = asyncio.Semaphore(window)

        async def one(i: int) -> None:
            try:
                await exchange.publish(aio_pika.Message(
                    orjson.dumps(send_request(i)), content_type="application/json", user_id="guest",
                    message_id=f"bench-{uuid.uuid4().hex}", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    "send.sms", mandatory=True, timeout=30)
            finally:
                slots.release()

        tasks = []
        for i in range(first, first + count):
            await slots.acquire()
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return 0


SENDERS = {"batch": send_http_batches, "single": send_http_singles, "amqp": send_amqp}


def measure_engine(mode: str, messages: int, processes: int, workdir: Path, code: Path = ROOT) -> dict:
    engine = BenchEngine(workdir, processes=processes, code=code)
    progress = StoreProgress(engine.db_path)
    try:
        engine.start()
        send = SENDERS[mode]
        uvloop.run(send(engine, 0, WARMUP))
        progress.wait_complete(WARMUP, timeout=120)
        pids = {**engine.child_pids(), broker_pid(): "broker"}
        cpu_before = {pid: cpu_seconds(pid) for pid in pids}
        started = time.monotonic()
        retried = uvloop.run(send(engine, WARMUP, messages))
        accepted = time.monotonic()
        finished = progress.wait_complete(WARMUP + messages, timeout=max(300, messages / 20))
        cpu: dict[str, float] = {}  # by kind: with --processes N several processes share a name
        for pid, name in pids.items():
            cpu[name] = cpu.get(name, 0.0) + cpu_seconds(pid) - cpu_before[pid]
        return {"seconds": finished - started, "ingest_seconds": accepted - started, "cpu": cpu, "retried": retried}
    finally:
        progress.close()
        engine.close()


def measure_bare(messages: int, processes: int, size: int) -> dict:
    with Vhost() as url:
        run = bare_chain.run_chain(url, messages, size, processes, warmup=WARMUP)
    return {"seconds": run.seconds, "ingest_seconds": run.seconds, "cpu": run.cpu_seconds, "retried": 0}


def python_cpu_ms(result: dict, messages: int) -> float:
    return 1000 * sum(v for k, v in result["cpu"].items() if k not in ("broker", "run")) / messages


def row(label: str, bare: dict, engine: dict, messages: int) -> list:
    bare_rate, engine_rate = messages / bare["seconds"], messages / engine["seconds"]
    bare_cpu, engine_cpu = python_cpu_ms(bare, messages), python_cpu_ms(engine, messages)
    return [label, bare_rate, engine_rate, engine_rate / bare_rate, bare_cpu, engine_cpu, bare_cpu / engine_cpu,
            1000 * bare["cpu"]["broker"] / messages, 1000 * engine["cpu"]["broker"] / messages, engine["retried"]]


HEADERS = ["mode", "bare msgs/s", "engine msgs/s", "ratio", "bare py CPU ms/msg", "engine py CPU ms/msg",
           "CPU ratio", "bare broker ms/msg", "engine broker ms/msg", "503 retried"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=1, help="engine: workers of each kind; bare: hops")
    parser.add_argument("--modes", default="batch,single,amqp")
    parser.add_argument("--code", type=Path, default=ROOT, metavar="DIR",
                        help="import the engine from DIR instead of this checkout")
    parser.add_argument("--compare-code", type=Path, metavar="DIR", action="append", default=[],
                        help="also measure the engine imported from DIR (another checkout) after each mode; "
                             "repeatable")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    modes = args.modes.split(",")
    codes = {"" if args.code == ROOT else f" [{args.code.name}]": args.code.resolve()}
    for other in args.compare_code:
        codes[f" [{other.name}]"] = other.resolve()
    size = routed_envelope_size()
    print(f"{args.messages} messages per measurement, routed envelope {size} bytes, "
          f"{args.processes} process(es) per kind; {code_line()}; {machine_line()}")
    if args.code != ROOT or args.compare_code:
        print("engine code: " + ", ".join(f"{label.strip() or 'this checkout'} from {code}"
                                          for label, code in codes.items()))
    ratios: dict[str, list[float]] = {}
    cpu_ratios: dict[str, list[float]] = {}
    everything = []
    for repeat in range(1, args.repeats + 1):
        rows, results = [], {}
        with tempfile.TemporaryDirectory(prefix="msgroute-bench-") as tmp:
            for mode in modes:  # each engine mode right after its own bare measurement
                bare = measure_bare(args.messages, args.processes, size)
                results[mode] = {"bare": bare}
                order = list(codes.items())
                for suffix, code in order if repeat % 2 else order[::-1]:  # alternate who goes first
                    label = MODES[mode] + suffix
                    engine = measure_engine(mode, args.messages, args.processes, Path(tmp) / f"{mode}{len(rows)}",
                                            code)
                    results[mode]["engine" + suffix] = engine
                    rows.append(row(label, bare, engine, args.messages))
                    ratios.setdefault(label, []).append(rows[-1][3])
                    cpu_ratios.setdefault(label, []).append(rows[-1][6])
        print(f"\nrepeat {repeat} (load average after: {machine_line()})")
        print(table(HEADERS, rows))
        everything.append(results)
    print("\nengine / bare chain over the repeats (target >= 0.5 for msgs/s)")
    print(table(["mode", "msgs/s ratio median", "min", "max", "CPU ratio median", "min", "max"],
                [[label, statistics.median(r), min(r), max(r), statistics.median(cpu_ratios[label]),
                  min(cpu_ratios[label]), max(cpu_ratios[label])] for label, r in ratios.items()]))
    if args.json:
        dump_json(args.json, everything)


if __name__ == "__main__":
    main()
