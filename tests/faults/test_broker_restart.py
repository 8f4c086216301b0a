"""Broker restart: stop RabbitMQ (a throwaway node of our own) in the middle of concurrent
ingest, keep POSTing while it is down, start it again.

While it is down the gateway answers 503 (with Retry-After) within 5 s and never 202; once
it is back, ingest resumes without anyone restarting msgroute; every message that got a 202
reaches a terminal status: a backlog of accepted messages sits in the durable quorum queues
while the node is down, and it all comes out the other side.
"""
import asyncio
import time

import aiohttp
import pytest

from tests.faults import tools
from tests.faults.load import Load

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

RECEIPT_TIMEOUT = 10  # a carrier gives up re-sending a receipt the gateway could not take


async def test_stop_and_start_the_broker_mid_ingest(throwaway_broker, make_engine, sqlite_url):
    node, amqp_url = throwaway_broker
    config = tools.engine_config(tools.sandbox_carrier(extra=f"receipt_timeout = {RECEIPT_TIMEOUT}"),
                                 broker="heartbeat_seconds = 5")
    engine = await asyncio.to_thread(tools.start_engine, make_engine, sqlite_url, config,
                                     env={"MSGROUTE_AMQP_URL": amqp_url})
    key = (await asyncio.to_thread(engine.create_account, "restart"))["api_key"]
    children_before = tools.children(engine.proc.pid)

    async with aiohttp.ClientSession() as http:
        load = Load(http, engine.base_url, key, senders=6).start()
        await asyncio.sleep(5)
        # a backlog the restart must keep: 1,000 accepted messages still in the queues when the node goes down
        backlog = await tools.ingest_batches(http, engine, key, [
            {"channel": "sms", "to": "+447911123456", "body": f"backlog {n}"} for n in range(1000)], batch=500)
        stopping = time.monotonic()
        in_flight = sum(1 for s in (await asyncio.to_thread(tools.statuses, sqlite_url, backlog)).values()
                        if s not in tools.TERMINAL)
        await asyncio.to_thread(node.stop)
        down = time.monotonic()
        tools.report("broker stopped", stop_took_s=round(down - stopping, 1), accepted_before=len(load.accepted()),
                     backlog_not_yet_final=in_flight)
        await asyncio.sleep(12)  # down: keep POSTing
        starting = time.monotonic()
        await asyncio.to_thread(node.start)
        up = time.monotonic()
        tools.report("broker started again", start_took_s=round(up - starting, 1))
        # ingest resumes by itself
        deadline = up + 60
        while not any(a.status == 202 for a in load.after(up)) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        resumed = [a for a in load.after(up) if a.status == 202]
        first_202 = resumed[0].ended - up if resumed else None
        await asyncio.sleep(5)
        await load.stop()

        ids = load.accepted() + backlog
        final = await tools.wait_all_terminal(sqlite_url, ids, timeout=120)

    children_after = tools.children(engine.proc.pid)
    while_down = load.within(down, starting)
    transition = [a for a in load.answers if a not in while_down and a.ended > stopping and a.started < up]
    counts = tools.invariants(sqlite_url, ids, final)
    timeouts = sum(1 for i in ids if final.get(i) == "undelivered")
    line = tools.report(
        "broker restart", accepted_202=len(ids), backlog_in_queues_at_stop=in_flight,
        while_down=load.summary(while_down),
        while_stopping_or_starting=load.summary(transition), after_up=load.summary(load.after(up)),
        first_202_after_up_s=None if first_202 is None else round(first_202, 1),
        supervisor_alive=engine.proc.poll() is None,
        children_restarted=len(set(children_before) - set(children_after)),
        undelivered_receipt_timeout=timeouts,
        timed_out_though_receipt_arrived_in_time=(late := tools.timed_out_despite_receipt(sqlite_url)), **counts)

    assert while_down, line
    assert all(a.status == 503 for a in while_down), \
        f"{[(a.status, a.body) for a in while_down if a.status != 503][:5]}; {line}"
    assert all(a.retry_after for a in while_down), line
    assert max(a.seconds for a in while_down) <= 5.0, line
    assert not any(a.status == 202 for a in load.answers if down <= a.started and a.ended <= starting), line
    assert first_202 is not None, f"ingest did not resume within 60 s of the broker's return; {line}"
    assert engine.proc.poll() is None, line  # the same `msgroute run`, never restarted by us
    assert children_before == children_after, line  # its workers reconnected; none crashed and was replaced
    assert in_flight > 0, line  # there was work in the queues when the node stopped
    assert counts["missing"] == 0 and counts["not_terminal"] == 0, line
    assert counts["more_than_one_terminal"] == 0 and counts["more_than_one_usage"] == 0, line
    # everything accepted went out; a receipt the carrier gave up on is closed by the receipt timeout
    assert set(counts["statuses"]) <= {"delivered", "undelivered"}, line
    # a receipt the gateway took before the timeout fired (queued behind the outage's backlog) wins
    assert late == 0, line
