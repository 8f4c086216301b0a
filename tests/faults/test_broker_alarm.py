"""Broker resource alarm: a memory alarm on the throwaway node blocks every publisher.

While it lasts, ingest answers 503 (or 429) with Retry-After in bounded time instead of
hanging, and never 202; once the broker has sent `connection.blocked`, at once. After it
clears, the client does what SPEC §4 tells it to — retries each refused message with the
same Idempotency-Key — and then: every 202'd message is
delivered, the carrier (Twilio's wire format, FakeTwilio with status callbacks) took each
message once, and nothing the client was refused went out under an id it never got.
"""
import asyncio
import time

import aiohttp
import pytest

from tests.carriers.fakes.fake_twilio import FakeTwilio
from tests.faults import tools
from tests.faults.load import Load

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ALARM_SECONDS = 10  # from when the node reports the alarm raised
BOUND_SECONDS = 10  # a refusal within this is "not hanging" (the publish confirm timeout is 5 s)
PROMPT_SECONDS = 1  # once the broker has told the gateway it is blocked, refusals come at once
SETTLE_SECONDS = 6  # requests started this long after the alarm no longer wait for an earlier confirm


async def memory_alarm(node, present: bool, timeout: float = 30) -> float:
    """Wait until the node reports its memory alarm raised (or cleared); returns when (monotonic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alarms = (await asyncio.to_thread(node.ctl, "eval", "rabbit_alarm:get_alarms().")).stdout
        if ("memory" in alarms) == present:
            return time.monotonic()
        await asyncio.sleep(0.2)
    raise AssertionError(f"memory alarm {'not raised' if present else 'not cleared'} within {timeout:.0f} s")


async def test_memory_alarm_refuses_ingest_in_bounded_time_and_loses_nothing(throwaway_broker, make_engine,
                                                                             sqlite_url):
    node, amqp_url = throwaway_broker
    async with FakeTwilio(callbacks=True, callback_delay=0.1) as fake:
        config = tools.engine_config(tools.twilio_carrier("twilio-uk", fake.base_url, extra="receipt_timeout = 30"),
                                     broker="heartbeat_seconds = 5")
        engine = await asyncio.to_thread(tools.start_engine, make_engine, sqlite_url, config,
                                         env={"MSGROUTE_AMQP_URL": amqp_url})
        key = (await asyncio.to_thread(engine.create_account, "alarm"))["api_key"]
        async with aiohttp.ClientSession() as http:
            load = Load(http, engine.base_url, key, senders=8, message={"channel": "sms", "to": "+447911123456"})
            load.start()
            await asyncio.sleep(3)
            await asyncio.to_thread(node.ctl, "set_vm_memory_high_watermark", "0.0000001")
            raised = await memory_alarm(node, True)  # the node's memory monitor raises it on its next tick
            await asyncio.sleep(ALARM_SECONDS)
            clearing = time.monotonic()  # from here on a 202 is fine again
            await asyncio.to_thread(node.ctl, "set_vm_memory_high_watermark", "0.4")
            cleared = await memory_alarm(node, False)
            await asyncio.sleep(3)
            await load.stop()
            retried = await load.retry_refused()
            ids = load.accepted()
            final = await tools.wait_all_terminal(sqlite_url, ids, timeout=90)
            await fake.callbacks_settled()

    during = load.within(raised, clearing)
    counts = tools.invariants(sqlite_url, ids, final)
    carrier = tools.carrier_report(fake, ids)
    line = tools.report(
        "broker memory alarm", alarm_s=ALARM_SECONDS, during_alarm=load.summary(during),
        after_clear=load.summary(load.after(cleared)), retried_with_same_key=len(retried),
        retries_accepted=sum(1 for a in retried if a.status == 202), **counts, **carrier)

    assert during, line
    assert all(a.status in (503, 429) for a in during), \
        f"{[(a.status, round(a.seconds, 1), a.body) for a in during if a.status not in (503, 429)][:5]}; {line}"
    assert all(a.retry_after for a in during), line
    assert max(a.seconds for a in during) <= BOUND_SECONDS, line
    settled = [a for a in during if a.started >= raised + SETTLE_SECONDS]
    assert settled and max(a.seconds for a in settled) < PROMPT_SECONDS, \
        f"slowest refusal once blocked: {max((a.seconds for a in settled), default=None)} s; {line}"
    assert any(a.status == 202 for a in load.after(cleared)), line
    assert all(a.status == 202 for a in retried), line
    assert counts["missing"] == 0 and counts["not_terminal"] == 0, line
    assert counts["more_than_one_terminal"] == 0 and counts["more_than_one_usage"] == 0, line
    assert counts["statuses"] == {"delivered": len(ids)}, line
    if carrier["ghost_ids_sent"]:
        raise tools.GhostSends(f"the carrier got {carrier['ghost_ids_sent']} messages under ids that were "
                               f"answered 503, not 202; {line}")
    if carrier["duplicate_bodies"]:
        raise tools.CarrierDuplicates(line)
