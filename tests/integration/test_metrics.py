"""/metrics of a running `msgroute run`, scraped during and after traffic: every SPEC §11 metric
is there with its labels, the counts match what was sent, and `promtool check metrics` passes."""
import asyncio
import collections
import random
import shutil
import subprocess
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.engine import SANDBOX_CARRIERS, wait_terminal

pytestmark = pytest.mark.timeout(300)

CONFIG = SANDBOX_CARRIERS + """
[routing]
retry_delays = [1]
max_attempts = 3
# the magic addresses fail on purpose; keep circuits closed so every count is exact
circuit_failure_threshold = 100000
"""
MAX_ATTEMPTS = 3

# SPEC §11: name -> (type, label names)
SPEC_METRICS = {
    "msgroute_messages_accepted_total": ("counter", {"channel"}),
    "msgroute_messages_rejected_total": ("counter", {"channel", "reason"}),
    "msgroute_messages_routed_total": ("counter", {"channel", "carrier", "region"}),
    "msgroute_dispatch_total": ("counter", {"carrier", "outcome"}),
    "msgroute_dispatch_seconds": ("histogram", {"carrier"}),
    "msgroute_receipts_total": ("counter", {"carrier", "status"}),
    "msgroute_accept_to_sent_seconds": ("histogram", {"channel"}),
    "msgroute_accept_to_delivered_seconds": ("histogram", {"channel"}),
    "msgroute_retries_total": ("counter", {"carrier"}),
    "msgroute_failovers_total": ("counter", {"from_carrier"}),
    "msgroute_carrier_circuit_open": ("gauge", {"carrier"}),
    "msgroute_usage_records_total": ("counter", {"channel"}),
    "msgroute_accounts_suspended_total": ("counter", set()),
}
CARRIERS = {"sms-uk": "uk-south", "sms-us": "us-east", "mail": "eu-west", "push": "eu-west"}  # name -> region

# (request, kind) — kind: delivered, undelivered, failed (permanent at send), flaky (transient every time)
KINDS = [
    ({"channel": "sms", "to": "+447911123456", "body": "hello"}, "delivered"),
    ({"channel": "sms", "to": "+14155550123", "body": "hi 👋"}, "delivered"),
    ({"channel": "sms", "to": "+15005550001", "body": "x"}, "failed"),
    ({"channel": "sms", "to": "+15005550002", "body": "x"}, "flaky"),
    ({"channel": "sms", "to": "+15005550003", "body": "x"}, "undelivered"),
    ({"channel": "email", "to": "alice@example.com", "subject": "s", "body": "b"}, "delivered"),
    ({"channel": "email", "to": "fail@example.com", "subject": "s", "body": "b"}, "failed"),
    ({"channel": "email", "to": "flaky@example.com", "subject": "s", "body": "b"}, "flaky"),
    ({"channel": "email", "to": "bounce@example.com", "subject": "s", "body": "b"}, "undelivered"),
    ({"channel": "push", "to": "token-abcdef123", "title": "t", "body": "b"}, "delivered"),
    ({"channel": "push", "to": "fail-token-123", "title": "t", "body": "b"}, "failed"),
    ({"channel": "push", "to": "flaky-token-123", "title": "t", "body": "b"}, "flaky"),
    ({"channel": "push", "to": "bounce-token-123", "title": "t", "body": "b"}, "undelivered"),
]
FINAL = {"delivered": "delivered", "undelivered": "undelivered", "failed": "failed", "flaky": "failed"}
INVALID = [  # refused at ingest: (request, channel label, reason label)
    ({"channel": "sms", "to": "+4479", "body": "x"}, "sms", "invalid_phone_number"),
    ({"channel": "sms", "to": "not-a-number", "body": "x"}, "sms", "invalid_phone_number"),
    ({"channel": "email", "to": "nobody", "subject": "s"}, "email", "invalid_email"),
]
TOTAL = 50


def plan() -> list[int]:
    """Every kind twice, the rest ordinary deliveries, shuffled."""
    rng = random.Random(11)
    kinds = [i % len(KINDS) for i in range(len(KINDS) * 2)]
    kinds += [rng.choice([0, 1, 5, 9]) for _ in range(TOTAL - len(kinds))]
    rng.shuffle(kinds)
    return kinds


class Scrape:
    def __init__(self, text: str):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = collections.defaultdict(list)
        for family in self.families.values():
            for sample in family.samples:
                self.samples[sample.name].append((sample.labels, sample.value))

    def family(self, name: str):
        # the parser names counter families without their _total suffix
        return self.families.get(name.removesuffix("_total")) or self.families.get(name)

    def by(self, sample: str, label: str, **match) -> dict[str, float]:
        out = collections.Counter()
        for labels, value in self.samples.get(sample, ()):
            if all(labels.get(k) == v for k, v in match.items()):
                out[labels.get(label)] += value
        return {k: v for k, v in out.items() if v}

    def total(self, sample: str, **match) -> float:
        return sum(v for labels, v in self.samples.get(sample, ())
                   if all(labels.get(k) == val for k, val in match.items()))


async def scrape(http: aiohttp.ClientSession, base: str) -> Scrape:
    async with http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return Scrape(await resp.text())


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian: apt-get install --no-install-recommends prometheus)"
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"promtool check metrics:\n{result.stdout}{result.stderr}"


def check_spec_metrics(s: Scrape) -> None:
    for name, (kind, labels) in SPEC_METRICS.items():
        family = s.family(name)
        assert family is not None, f"{name} is missing from /metrics"
        assert family.type == kind, f"{name} is a {family.type}, SPEC wants a {kind}"
        assert family.samples, f"{name} has no samples"
        for sample in family.samples:
            got = set(sample.labels) - {"le"}
            assert got == labels, f"{sample.name} has labels {sorted(got)}, SPEC says {sorted(labels)}"


async def send(http, base: str, key: str, body: dict) -> tuple[int, dict]:
    async with http.post(f"{base}/v1/messages", json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
        return resp.status, await resp.json()


def expected_counts(messages: dict[str, dict], sent: dict[str, int]) -> dict:
    """What /metrics must say, from what was sent and where each message ended."""
    by_channel = collections.defaultdict(collections.Counter)  # channel -> kind -> n
    for index in sent.values():
        request, kind = KINDS[index]
        by_channel[request["channel"]][kind] += 1
    sent_by_carrier = collections.Counter()
    receipts = collections.Counter()
    for message in messages.values():
        if message["status"] in ("delivered", "undelivered"):
            sent_by_carrier[message["carrier"]] += 1
            receipts[(message["carrier"], message["status"])] += 1
    flaky = {ch: c["flaky"] for ch, c in by_channel.items()}
    return {
        "accepted": {ch: sum(c.values()) for ch, c in by_channel.items()},
        "reached_carrier": {ch: c["delivered"] + c["undelivered"] for ch, c in by_channel.items()},
        "delivered": {ch: c["delivered"] for ch, c in by_channel.items()},
        "permanent": sum(c["failed"] for c in by_channel.values()),
        "transient": sum(flaky.values()) * MAX_ATTEMPTS,
        # SPEC §7: a transient error fails over to the next unused candidate at once; with none left it
        # retries after a delay. SMS has two carriers (one failover, then one retry round); email and
        # push have one (a retry after each of the first two attempts).
        "failovers": flaky.get("sms", 0),
        "retries": flaky.get("sms", 0) * 1 + (flaky.get("email", 0) + flaky.get("push", 0)) * 2,
        "sent_by_carrier": dict(sent_by_carrier),
        "receipts": dict(receipts),
    }


def compare(s: Scrape, want: dict) -> list[str]:
    problems = []

    def check(what, got, expected):
        if got != expected:
            problems.append(f"{what}: /metrics says {got}, expected {expected}")

    check("messages_accepted_total by channel", s.by("msgroute_messages_accepted_total", "channel"),
          want["accepted"])
    check("messages_routed_total by channel", s.by("msgroute_messages_routed_total", "channel"), want["accepted"])
    check("usage_records_total by channel", s.by("msgroute_usage_records_total", "channel"),
          {k: v for k, v in want["reached_carrier"].items() if v})
    check("accept_to_sent_seconds_count by channel", s.by("msgroute_accept_to_sent_seconds_count", "channel"),
          {k: v for k, v in want["reached_carrier"].items() if v})
    check("accept_to_delivered_seconds_count by channel",
          s.by("msgroute_accept_to_delivered_seconds_count", "channel"),
          {k: v for k, v in want["delivered"].items() if v})
    check("dispatch_total{outcome=sent} by carrier", s.by("msgroute_dispatch_total", "carrier", outcome="sent"),
          want["sent_by_carrier"])
    check("dispatch_total{outcome=permanent}", s.total("msgroute_dispatch_total", outcome="permanent"),
          want["permanent"])
    check("dispatch_total{outcome=transient}", s.total("msgroute_dispatch_total", outcome="transient"),
          want["transient"])
    # every attempt that reached the carrier is timed; a duplicate copy or a deferral never calls it
    check("dispatch_seconds_count", s.total("msgroute_dispatch_seconds_count"),
          s.total("msgroute_dispatch_total") - sum(s.total("msgroute_dispatch_total", outcome=outcome)
                                                   for outcome in ("circuit_open", "duplicate", "sender_busy")))
    receipts = {(labels["carrier"], labels["status"]): value
                for labels, value in s.samples.get("msgroute_receipts_total", ()) if value}
    check("receipts_total by carrier and status", receipts, want["receipts"])
    check("failovers_total", s.total("msgroute_failovers_total"), want["failovers"])
    check("retries_total", s.total("msgroute_retries_total"), want["retries"])
    return problems


def engine_warnings(engine, limit: int = 20) -> list[str]:
    """The engine's warnings and redeliveries: what explains a count that is off."""
    lines = [line for line in engine.log_text().splitlines()
             if '"level":"info"' not in line or "redeliver" in line]  # compact JSON lines
    return lines[:limit]


async def test_metrics_cover_the_spec_and_match_the_traffic(make_engine, sqlite_url):
    engine = make_engine(sqlite_url, CONFIG)
    key = engine.create_account("metrics")["api_key"]
    base = engine.base_url
    kinds = plan()
    async with aiohttp.ClientSession() as http:
        # ops endpoints answer without auth
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200

        sent: dict[str, int] = {}
        half = len(kinds) // 2
        results = await asyncio.gather(*(send(http, base, key, KINDS[i][0]) for i in kinds[:half]))
        # a scrape while the first half is being routed, dispatched and receipted
        during = await scrape(http, base)
        promtool_check(during.text)
        results += await asyncio.gather(*(send(http, base, key, KINDS[i][0]) for i in kinds[half:]))
        invalid = await asyncio.gather(*(send(http, base, key, body) for body, _, _ in INVALID))
        for index, (status, body) in zip(kinds, results):
            assert status == 202, body
            sent[body["id"]] = index
        for (status, body), (_, channel, reason) in zip(invalid, INVALID):
            assert status == 400 and body["error"]["code"] == reason, body

        messages = await wait_terminal(http, base, key, list(sent))
        assert len(messages) == len(sent), "not every message reached a final status"
        for message_id, message in messages.items():
            assert message["status"] == FINAL[KINDS[sent[message_id]][1]], message
        want = expected_counts(messages, sent)

        # the status worker counts just after it commits: allow it a moment to catch up
        deadline = time.monotonic() + 20
        while True:
            final = await scrape(http, base)
            problems = compare(final, want)
            if not problems or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)

    check_spec_metrics(final)
    assert not problems, "\n".join(problems + ["engine warnings:"] + engine_warnings(engine))
    rejected = {(labels["channel"], labels["reason"]): value
                for labels, value in final.samples["msgroute_messages_rejected_total"] if value}
    assert rejected == dict(collections.Counter((channel, reason) for _, channel, reason in INVALID))
    for labels, _ in final.samples["msgroute_messages_routed_total"]:
        assert labels["region"] == CARRIERS[labels["carrier"]], labels
    circuits = {labels["carrier"]: value for labels, value in final.samples["msgroute_carrier_circuit_open"]}
    assert set(circuits) == set(CARRIERS) and not any(circuits.values()), circuits
    assert final.total("msgroute_accounts_suspended_total") == 0
    depths = {labels["queue"] for labels, _ in final.samples["msgroute_queue_depth"]}
    assert {"msgroute.route", "msgroute.status", "msgroute.receipts",
            *(f"msgroute.dispatch.{c}" for c in CARRIERS)} <= depths, depths
    # labels stay bounded: no message ids or addresses
    assert "msg_" not in final.text and "@example.com" not in final.text and "+44791" not in final.text
    promtool_check(final.text)
