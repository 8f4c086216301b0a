"""Worker crash: `kill -9` a dispatch worker and a route worker while 10,000 messages are in flight.

The carrier is Twilio's wire format served by FakeTwilio, which also sends Twilio's signed
status callbacks, so the whole path runs: HTTP batch ingest → route → dispatch → carrier →
callback → status. `msgroute run` restarts the killed children by itself.

A worker killed at a random instant may or may not hold messages, and may or may not have
acks still on their way to the broker; to make the case deterministic, the engine's AMQP
connections pass through our fault proxy, and each victim is first paused (SIGSTOP) for 2 s
so its queue and its prefetch fill up, then its consuming connection is frozen, then it is
resumed for a moment — it works through what it holds and publishes the results, but its
acks never arrive, as when a process dies with acks in its socket buffer — and then killed.
So every message it had in hand comes back to the restarted worker as a redelivery.

Afterwards: every message that got a 202 is in exactly one terminal status with at most one
usage record; nothing the dispatch worker had in hand was sent twice; and the carrier took
each body at most once (carrier-side duplicates are counted and printed).
"""
import asyncio
import collections
import os
import signal
import time

import aio_pika
import aiohttp
import pytest

from tests.carriers.fakes.fake_twilio import FakeTwilio
from tests.faults import tools
from tests.faults.proxy import FaultProxy

TOTAL = int(os.environ.get("MSGROUTE_FAULT_MESSAGES", "10000"))
RECEIPT_TIMEOUT = 15
STALL_SECONDS = {"worker dispatch": 2.0, "worker route": 1.5}
QUEUES = {"worker dispatch": "msgroute.dispatch.twilio-uk", "worker route": "msgroute.route"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


async def test_kill_9_dispatch_and_route_workers_mid_stream(vhost, make_engine, sqlite_url):
    with FaultProxy(tools.amqp_port(vhost)) as proxy:
        async with FakeTwilio(callbacks=True, callback_delay=0.2) as fake:
            await _run(proxy, vhost, fake, make_engine, sqlite_url)


async def _run(proxy: FaultProxy, vhost: str, fake: FakeTwilio, make_engine, sqlite_url: str) -> None:
    config = tools.engine_config(tools.twilio_carrier("twilio-uk", fake.base_url,
                                                      extra=f"receipt_timeout = {RECEIPT_TIMEOUT}"))
    engine = await asyncio.to_thread(tools.start_engine, make_engine, sqlite_url, config,
                                     env={"MSGROUTE_AMQP_URL": proxy.url(vhost)})
    try:
        await _crash(proxy, vhost, fake, engine, sqlite_url)
    finally:
        await asyncio.to_thread(engine.stop)  # while its broker path (the proxy) is still there


async def _ready(vhost: str, queue: str) -> int:
    """Messages waiting (not delivered to any consumer) in `queue`, asked of the broker directly."""
    connection = await aio_pika.connect(vhost)
    async with connection:
        channel = await connection.channel()
        return (await channel.declare_queue(queue, passive=True)).declaration_result.message_count


async def _crash(proxy: FaultProxy, vhost: str, fake: FakeTwilio, engine, sqlite_url: str) -> None:
    key = (await asyncio.to_thread(engine.create_account, "crash"))["api_key"]
    messages = [{"channel": "sms", "to": f"+4479{n % 100_000_000:08d}", "body": f"crash test message {n}"}
                for n in range(TOTAL)]
    ingested = 0
    killed: dict[str, dict] = {}

    async def stall_and_kill(kind: str) -> dict:
        """Make sure the worker holds a full prefetch, freeze its consuming connection, let it work on
        what it holds, then kill -9 it."""
        [pid] = tools.child_pids(engine, kind)
        label = f"msgroute {kind}"
        os.kill(pid, signal.SIGSTOP)  # its queue fills up behind it, its prefetch into its socket
        # Its prefetch is full once messages wait in its queue beyond it. Not longer than about
        # 8 s: a process stopped past its heartbeat grace (11 s at the default 10 s heartbeat)
        # drops its connection on waking, before reading what it holds.
        deadline = time.monotonic() + 8
        await asyncio.sleep(1)
        while await _ready(vhost, QUEUES[kind]) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        frozen = proxy.set_mode("blackhole", label=label)
        os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(STALL_SECONDS[kind])
        tools.kill9(pid)
        at = time.monotonic()
        proxy.set_mode("pass", label=label)  # the restarted worker's connection passes again
        info = {"pid": pid, "frozen": frozen, "killed": at, "ingested": ingested,
                "carrier_accepted": len(fake.accepted)}
        tools.report(f"froze {label}'s consuming connection {STALL_SECONDS[kind]} s, then kill -9", pid=pid,
                     ingested=ingested, carrier_accepted=len(fake.accepted))
        return info

    async def progress(done: int) -> None:
        nonlocal ingested
        ingested = done

    async def chaos() -> None:
        while len(fake.accepted) < TOTAL * 0.05:
            await asyncio.sleep(0.05)
        killed["worker dispatch"] = await stall_and_kill("worker dispatch")
        # the route worker next, while ingest is still feeding it
        killed["worker route"] = await stall_and_kill("worker route")

    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        chaos_task = asyncio.create_task(chaos())
        ids = await tools.ingest_batches(http, engine, key, messages, batch=100, concurrency=2,
                                         on_progress=progress)
        ingest_seconds = time.monotonic() - started
        await asyncio.wait_for(chaos_task, timeout=300)
        restarted = {kind: await tools.wait_restarted(engine, kind, info["pid"]) for kind, info in killed.items()}
        tools.report("restarted by msgroute run", **{kind.split()[-1]: f"{killed[kind]['pid']}->{pid}"
                                                     for kind, pid in restarted.items()})
        final = await tools.wait_all_terminal(sqlite_url, ids, timeout=300)
        settle_seconds = time.monotonic() - started
        await fake.callbacks_settled()

    counts = tools.invariants(sqlite_url, ids, final)
    carrier = tools.carrier_report(fake, ids)
    # What the dispatch worker had in hand when killed: messages it sent whose acks never reached the
    # broker. They come back to its successor as redeliveries, which says so in its log — whether
    # their `sent` was recorded before the freeze ("already handled") or not ("mid-send") — and
    # anything it sent during the freeze is among them.
    stall = killed["worker dispatch"]
    body_of = dict(zip(ids, (m["body"] for m in messages)))
    redelivered_handled = tools.logged_ids(engine, "redelivered message already handled")
    redelivered_mid_send = tools.logged_ids(engine, "redelivered after a crash mid-send")
    sent_in_freeze = {r.form()["Body"] for r in fake.requests if stall["frozen"] <= r.at <= stall["killed"]}
    in_hand = sent_in_freeze | {body_of[i] for i in redelivered_handled | redelivered_mid_send}
    sends = collections.Counter(r.form()["Body"] for r in fake.requests)
    resent = {body for body in in_hand if sends[body] > 1}
    timeouts = sum(1 for i in ids if final.get(i) == "undelivered")
    line = tools.report(
        "worker crash", messages=TOTAL, accepted_202=len(ids), **counts, **carrier,
        dispatch_in_hand_at_kill=len(in_hand), dispatch_sent_in_freeze=len(sent_in_freeze),
        redelivered_already_handled=len(redelivered_handled), redelivered_mid_send=len(redelivered_mid_send),
        dispatch_in_hand_resent=len(resent),
        route_redelivered_already_dispatched=len(tools.logged_ids(engine, "redelivered message already dispatched")),
        undelivered_receipt_timeout=timeouts,
        timed_out_though_receipt_arrived_in_time=(late := tools.timed_out_despite_receipt(sqlite_url)),
        callbacks_sent=len(fake.callbacks), callbacks_refused=sum(1 for c in fake.callbacks if c.status != 200),
        ingest_s=round(ingest_seconds, 1), all_terminal_s=round(settle_seconds, 1))

    assert len(ids) == TOTAL, line
    assert counts["missing"] == 0 and counts["not_terminal"] == 0, line
    assert counts["more_than_one_terminal"] == 0, line
    assert counts["more_than_one_usage"] == 0, line
    assert counts["usage_records"] == len(ids), line  # every message reached the carrier stage once
    assert set(counts["statuses"]) <= {"delivered", "undelivered"}, line
    assert late == 0, line  # no receipt the gateway took in time was overruled by the receipt timeout
    # the dispatch log works: a redelivered message that was handed to the carrier is not sent again
    assert in_hand, f"the dispatch worker had nothing in hand when killed; {line}"
    assert not resent, f"{len(resent)} bodies the killed dispatch worker had sent went out again: " \
                       f"{sorted(resent)[:5]}; {line}"
    if carrier["ghost_ids_sent"]:
        raise tools.GhostSends(line)
    if carrier["duplicate_bodies"]:
        raise tools.CarrierDuplicates(line)
