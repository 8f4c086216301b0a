"""Routing against real carrier adapters and fake carrier servers: circuits, failover, rate limits."""
import asyncio
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.carriers.fakes.fake_twilio import FakeTwilio
from tests.engine import wait_terminal

SENT_IS_FINAL = frozenset({"sent", "delivered", "undelivered", "failed", "rejected", "expired"})


def twilio_carrier(name: str, fake: FakeTwilio, cost: str, extra: str = "") -> str:
    return f"""
[[carriers]]
name = "{name}"
channel = "sms"
adapter = "twilio"
region = "uk-south"
receipts = false
{extra}
settings = {{ base_url = "{fake.base_url}", account_sid = "AC123", auth_token = "token", from = "+447400000001" }}
rates = {{ "44" = "{cost}", currency = "USD" }}
"""


REGION = '[[regions]]\nname = "uk-south"\njurisdictions = ["GB"]\n'


async def send_many(http, engine, key, bodies: list[str]) -> list[str]:
    async with http.post(f"{engine.base_url}/v1/messages/batch", headers={"Authorization": f"Bearer {key}"},
                         json={"messages": [{"channel": "sms", "to": "+447400123456", "body": b} for b in bodies]}) \
            as resp:
        assert resp.status == 202
        return [r["id"] for r in (await resp.json())["results"]]


async def circuit_gauge(http, engine, carrier: str) -> float:
    async with http.get(f"{engine.base_url}/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        if family.name == "msgroute_carrier_circuit_open":
            for sample in family.samples:
                if sample.labels.get("carrier") == carrier:
                    return sample.value
    return -1


def accepted_bodies(*fakes: FakeTwilio) -> list[str]:
    return [r.form()["Body"] for fake in fakes for r in fake.requests if r.behaviour == "happy"]


@pytest.mark.timeout(300)
async def test_failing_carrier_opens_its_circuit_traffic_moves_and_it_closes_on_recovery(make_engine, sqlite_url):
    async with FakeTwilio() as primary, FakeTwilio() as backup:
        config = REGION + twilio_carrier("primary", primary, "0.0100") + twilio_carrier("backup", backup, "0.0200") \
            + "[routing]\nretry_delays = [1]\nmax_attempts = 4\ncircuit_failure_threshold = 3\n" \
              "circuit_cooldown_seconds = 3\n"
        engine = make_engine(sqlite_url, config)
        key = engine.create_account()["api_key"]
        async with aiohttp.ClientSession() as http:
            # healthy: the cheaper carrier takes everything
            ids = await send_many(http, engine, key, [f"a{n}" for n in range(20)])
            await wait_terminal(http, engine.base_url, key, ids, terminal=SENT_IS_FINAL)
            assert len(primary.requests) == 20 and not backup.requests

            # the primary starts failing every send: failover, then its circuit opens
            primary.behaviour = "server_error"
            ids_down = []
            for wave in range(4):
                ids_down += await send_many(http, engine, key, [f"b{wave}-{n}" for n in range(25)])
                await asyncio.sleep(0.3)
            final = await wait_terminal(http, engine.base_url, key, ids_down, terminal=SENT_IS_FINAL)
            assert {m["status"] for m in final.values()} == {"sent"}
            assert {m["carrier"] for m in final.values()} == {"backup"}
            failed_at_primary = sum(1 for r in primary.requests if r.behaviour == "server_error")
            assert failed_at_primary < 100, "the open circuit should have stopped sends to the failing carrier"
            assert await circuit_gauge(http, engine, "primary") == 1

            # it recovers: after the cooldown a probe succeeds, the circuit closes, traffic returns
            primary.behaviour = "happy"
            await asyncio.sleep(3.5)
            ids_up = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                ids_up += await send_many(http, engine, key, [f"c{len(ids_up) + n}" for n in range(5)])
                await asyncio.sleep(0.5)
                if await circuit_gauge(http, engine, "primary") == 0 and sum(
                        1 for r in primary.requests[-5:] if r.behaviour == "happy") == 5:
                    break
            final_up = await wait_terminal(http, engine.base_url, key, ids_up, terminal=SENT_IS_FINAL)
            assert await circuit_gauge(http, engine, "primary") == 0
            assert final_up[ids_up[-1]]["carrier"] == "primary"

        # nothing lost, nothing sent twice: every body accepted by exactly one carrier, once
        bodies = accepted_bodies(primary, backup)
        expected = [f"a{n}" for n in range(20)] + [f"b{w}-{n}" for w in range(4) for n in range(25)] + \
            [f"c{n}" for n in range(len(ids_up))]
        assert sorted(bodies) == sorted(expected)
        print(f"primary failed sends while down: {failed_at_primary} of 100 messages; "
              f"probe and recovery after {len(ids_up)} messages")


@pytest.mark.timeout(300)
async def test_rate_limit_holds_across_dispatch_processes_at_the_carrier(make_engine, sqlite_url):
    async with FakeTwilio() as fake:
        config = REGION + twilio_carrier("limited", fake, "0.0100", "rate_limit = 50")
        engine = make_engine(sqlite_url, config, processes=2)
        key = engine.create_account()["api_key"]
        await asyncio.sleep(2)  # both dispatch processes attached and counted each other
        async with aiohttp.ClientSession() as http:
            ids = []
            for wave in range(3):
                ids += await send_many(http, engine, key, [f"r{wave}-{n}" for n in range(100)])
            # keep this process idle while the carrier is measured: polling here would delay the fake's clock
            for _ in range(600):
                if len(fake.requests) >= 300:
                    break
                await asyncio.sleep(0.2)
            final = await wait_terminal(http, engine.base_url, key, ids, terminal=SENT_IS_FINAL, timeout=120)
        assert len(final) == 300 and {m["status"] for m in final.values()} == {"sent"}
        times = sorted(r.at for r in fake.requests)
        busiest = max(sum(1 for t in times[i:i + 60] if t < start + 1.0) for i, start in enumerate(times))
        elapsed = times[-1] - times[0]
        print(f"300 sends over {elapsed:.2f}s; busiest one-second window: {busiest}")
        assert busiest <= 50
        assert elapsed >= 299 / 50 * 0.95  # and the limit was actually the pace, not something slower
        assert elapsed < 299 / 50 * 3  # generous: CI machines are noisy
