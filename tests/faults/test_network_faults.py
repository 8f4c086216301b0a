"""Network faults through our TCP fault proxy (tests/faults/proxy.py), on loopback.

1. Between the engine and RabbitMQ (MSGROUTE_AMQP_URL points at the proxy; heartbeats of
   2 s): latency, then every connection reset, then a black hole. Each time the engine
   reconnects by itself and nothing that got a 202 is lost; a black-holed (silently dead)
   connection must be noticed within two heartbeats.
2. Between dispatch and the carrier (the Twilio carrier's base_url points at the proxy): the
   carrier takes the message but its reply is lost on the way back. The dispatch log must
   keep that from becoming a second delivery: the fake must see each body once.
"""
import asyncio
import statistics
import time

import aiohttp
import pytest

from tests.carriers.fakes.fake_twilio import FakeTwilio
from tests.faults import tools
from tests.faults.load import Load
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

HEARTBEAT = 2
BLACKHOLE_SECONDS = 12  # long enough to see when each connection gives up
DETECTION_BOUND = 2 * HEARTBEAT + 1.0  # two heartbeats, plus 1 s for the check's own tick
PROCESSES = {"msgroute gateway", "msgroute worker route", "msgroute worker route (publish)",
             "msgroute worker dispatch", "msgroute worker dispatch (publish)", "msgroute worker status",
             "msgroute worker status (publish)"}


async def wait_reconnected(proxy: FaultProxy, since: float, timeout: float = 60) -> float:
    """Until every engine process has a live connection opened after `since`; returns how long it took."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = {c.label for c in proxy.live() if c.opened_at >= since}
        if PROCESSES <= fresh:
            return time.monotonic() - since
        await asyncio.sleep(0.2)
    missing = PROCESSES - {c.label for c in proxy.live() if c.opened_at >= since}
    raise AssertionError(f"not reconnected within {timeout:.0f} s: {sorted(missing)}")


async def test_broker_latency_reset_and_black_hole(vhost, make_engine, sqlite_url):
    with FaultProxy(tools.amqp_port(vhost)) as proxy:
        async with FakeTwilio(callbacks=True, callback_delay=0.1) as fake:
            config = tools.engine_config(tools.twilio_carrier("twilio-uk", fake.base_url,
                                                              extra="receipt_timeout = 15"),
                                         broker=f"heartbeat_seconds = {HEARTBEAT}")
            engine = await asyncio.to_thread(tools.start_engine, make_engine, sqlite_url, config,
                                             env={"MSGROUTE_AMQP_URL": proxy.url(vhost)})
            try:
                await _broker_faults(proxy, fake, engine, sqlite_url)
            finally:
                await asyncio.to_thread(engine.stop)


async def _broker_faults(proxy: FaultProxy, fake: FakeTwilio, engine, sqlite_url: str) -> None:
    key = (await asyncio.to_thread(engine.create_account, "network"))["api_key"]
    async with aiohttp.ClientSession() as http:
        load = Load(http, engine.base_url, key, senders=4).start()
        await asyncio.sleep(3)

        # latency: slower, still correct
        proxy.set_mode("latency", latency=0.2)
        await asyncio.sleep(5)
        latency_answers = load.after(time.monotonic() - 4)
        proxy.set_mode("pass")

        # reset: every connection RST, twice
        reconnect_after_reset = []
        for _ in range(2):
            reset_at = proxy.set_mode("reset")
            await asyncio.sleep(0.3)
            proxy.set_mode("pass")
            reconnect_after_reset.append(round(await wait_reconnected(proxy, reset_at), 1))
            await asyncio.sleep(2)

        # black hole: the connections stay up as far as TCP knows, and nothing arrives
        before = {c.number for c in proxy.live() if c.label in PROCESSES}
        hole_at = proxy.set_mode("blackhole")
        await asyncio.sleep(BLACKHOLE_SECONDS)
        detected = {c.label: c.closed_at - hole_at for c in proxy.connections
                    if c.number in before and c.closed_at is not None and c.closed_by == "client"}
        undetected = sorted(c.label for c in proxy.connections if c.number in before and c.number
                            not in {n.number for n in proxy.connections if n.closed_at is not None})
        proxy.set_mode("pass")
        passed_at = time.monotonic()
        reconnect_after_hole = await wait_reconnected(proxy, passed_at)
        await asyncio.sleep(4)
        await load.stop()

        ids = load.accepted()
        final = await tools.wait_all_terminal(sqlite_url, ids, timeout=120)
        await fake.callbacks_settled()

    counts = tools.invariants(sqlite_url, ids, final)
    carrier = tools.carrier_report(fake, ids)
    hole_answers = load.within(hole_at, passed_at)
    times = sorted(detected.values())
    line = tools.report(
        "broker network faults", heartbeat_s=HEARTBEAT, latency_phase=load.summary(latency_answers),
        reconnect_after_reset_s=reconnect_after_reset, black_hole_s=BLACKHOLE_SECONDS,
        connections_in_hole=len(before), detected=len(times),
        detection_s=f"min {times[0]:.1f} / median {statistics.median(times):.1f} / max {times[-1]:.1f}"
        if times else "none", undetected=undetected, reconnect_after_hole_s=round(reconnect_after_hole, 1),
        during_hole=load.summary(hole_answers), after=load.summary(load.after(passed_at)),
        no_answer_during_hole=[a.body for a in hole_answers if a.status == 0], **counts, **carrier)

    assert any(a.status == 202 for a in latency_answers), line
    assert all(a.status in (202, 503) for a in load.answers if a.status != 0), line
    # never a 202 while the broker is unreachable, and every request answered: a request whose
    # confirm was pending when the connection was found dead gets its 503 then (about two heartbeats)
    assert all(a.status == 503 for a in hole_answers), line
    assert any(a.status == 202 for a in load.after(passed_at + reconnect_after_hole)), line
    assert counts["missing"] == 0 and counts["not_terminal"] == 0, line
    assert counts["more_than_one_terminal"] == 0 and counts["more_than_one_usage"] == 0, line
    assert carrier["accepted_ids_never_sent"] == 0, line
    assert set(counts["statuses"]) <= {"delivered", "undelivered"}, line
    if len(times) < len(before):
        raise tools.SlowDetection(f"connections that never noticed the black hole in {BLACKHOLE_SECONDS} s: "
                                  f"{undetected}; {line}")
    if times[-1] > DETECTION_BOUND:
        raise tools.SlowDetection(f"slowest detection {times[-1]:.1f} s > {DETECTION_BOUND:.1f} s "
                                  f"(two heartbeats of {HEARTBEAT} s); {line}")


async def test_lost_carrier_reply_is_not_a_second_delivery(make_engine, sqlite_url):
    async with FakeTwilio(callbacks=True, callback_delay=0.1) as fake:
        with FaultProxy(int(fake.base_url.rsplit(":", 1)[1])) as proxy:
            config = tools.engine_config(tools.twilio_carrier("twilio-uk", proxy.base_url,
                                                              extra="receipt_timeout = 15"))
            engine = await asyncio.to_thread(tools.start_engine, make_engine, sqlite_url, config)
            key = (await asyncio.to_thread(engine.create_account, "lost-reply"))["api_key"]
            async with aiohttp.ClientSession() as http:
                warm = [{"channel": "sms", "to": "+447911123456", "body": f"before {n}"} for n in range(20)]
                ids = await tools.ingest_batches(http, engine, key, warm, batch=20)
                await tools.wait_all_terminal(sqlite_url, ids, timeout=60)

                lost = 20
                proxy.set_mode("lose_reply")
                batch = [{"channel": "sms", "to": "+447911123456", "body": f"reply lost {n}"} for n in range(lost)]
                ids += await tools.ingest_batches(http, engine, key, batch, batch=lost)
                # until every one of them had its reply dropped (the carrier counting a request is not
                # enough: its reply may still be on its way through the proxy)
                deadline = time.monotonic() + 60
                while sum(1 for c in proxy.connections if c.dropped_down) < lost and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                proxy.set_mode("pass")  # from here on replies arrive again

                after = [{"channel": "sms", "to": "+447911123456", "body": f"after {n}"} for n in range(20)]
                ids += await tools.ingest_batches(http, engine, key, after, batch=20)
                final = await tools.wait_all_terminal(sqlite_url, ids, timeout=120)
                await fake.callbacks_settled()

    counts = tools.invariants(sqlite_url, ids, final)
    carrier = tools.carrier_report(fake, ids)
    replies_lost = sum(1 for c in proxy.connections if c.dropped_down)
    line = tools.report("lost carrier replies", sent=len(ids), replies_lost=replies_lost, **counts, **carrier)

    assert replies_lost >= lost, line
    assert counts["missing"] == 0 and counts["not_terminal"] == 0, line
    assert counts["more_than_one_terminal"] == 0 and counts["more_than_one_usage"] == 0, line
    assert carrier["accepted_ids_never_sent"] == 0, line
    if carrier["duplicate_bodies"]:
        raise tools.CarrierDuplicates(f"{carrier['duplicate_bodies']} bodies delivered more than once after "
                                      f"their reply was lost; {line}")
