"""Receipt chaos: duplicated, reordered, unknown-id and forged delivery receipts, in volume.

One engine, two sandbox carriers and two accounts with the same traffic:
- `clean`: its carrier sends one receipt per message, as a well-behaved carrier does;
- `chaos`: its carrier sends none, and this test plays the carrier badly — each message's
  final receipt three times, an intermediate `accepted` receipt after it, all of them shuffled
  across messages and fired concurrently — mixed with receipts for carrier ids nobody sent
  (some naming a real message of the other account by `ref`), signed bodies that are not
  receipts at all, and forged ones (bad, missing or misplaced X-Sandbox-Signature) that try
  to flip the outcome.
The chaos account's final statuses must equal the clean account's message for message, with
one terminal status and one usage record each; the webhook answers 200 or 403, never 5xx.
"""
import asyncio
import collections
import hashlib
import hmac
import random
import time
import uuid

import aiohttp
import orjson
import pytest

from tests.faults import tools

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SECRET = "sandbox-secret"
PER_KIND = 60
KINDS = [  # (to, final receipt a carrier would send: None when it fails at send)
    ("+447911123456", "delivered"),
    ("+447400123456", "delivered"),
    ("+14155550123", "delivered"),
    ("+15005550003", "undelivered"),  # sandbox bounce
    ("+15005550001", None),  # permanent failure at send
    ("+15005550002", None),  # transient failure every time: retries, then failed
]


def carriers() -> str:
    out = '[[regions]]\nname = "eu-west"\njurisdictions = ["EU"]\n'
    for name, region, receipts in (("sms-clean", "uk-south", "true"), ("sms-chaos", "eu-west", "false")):
        out += f"""
[[carriers]]
name = "{name}"
channel = "sms"
adapter = "sandbox"
region = "{region}"
settings = {{ latency_ms = 0, receipt_delay_ms = 20, send_receipts = {receipts} }}
rates = {{ "44" = "0.0300", default = "0.0500", currency = "USD" }}
"""
    return out


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def receipt(carrier_id: str, ref: str, status: str) -> bytes:
    return orjson.dumps({"id": carrier_id, "ref": ref, "status": status,
                         "error": "sandbox_bounce" if status == "undelivered" else None})


async def test_receipt_chaos_ends_where_a_clean_run_does(make_engine, sqlite_url):
    config = tools.engine_config(carriers(), routing={"max_attempts": "2"})
    engine = await asyncio.to_thread(tools.start_engine, make_engine, sqlite_url, config)
    clean = await asyncio.to_thread(engine.create_account, "clean", "--regions", "uk-south")
    chaos = await asyncio.to_thread(engine.create_account, "chaos", "--regions", "eu-west")
    plan = [kind for kind in range(len(KINDS)) for _ in range(PER_KIND)]
    random.Random(8).shuffle(plan)
    messages = [{"channel": "sms", "to": KINDS[k][0], "body": f"chaos {n}"} for n, k in enumerate(plan)]

    async with aiohttp.ClientSession() as http:
        clean_ids, chaos_ids = await asyncio.gather(
            tools.ingest_batches(http, engine, clean["api_key"], messages, batch=120),
            tools.ingest_batches(http, engine, chaos["api_key"], messages, batch=120))
        # the chaos carrier's messages go out, and wait for receipts that only we will send
        sent = await _wait_sent_or_final(sqlite_url, chaos_ids, timeout=120)
        carrier_ids = dict(tools.query(sqlite_url, "SELECT id, carrier_message_id FROM messages WHERE "
                                                   "carrier = 'sms-chaos' AND carrier_message_id IS NOT NULL"))
        requests = _chaos_requests(plan, chaos_ids, clean_ids, carrier_ids)
        started = time.monotonic()
        answers = await _fire(http, f"{engine.base_url}/webhooks/dlr/sms-chaos", requests)
        fire_seconds = time.monotonic() - started
        final_clean = await tools.wait_all_terminal(sqlite_url, clean_ids, timeout=120)
        final_chaos = await tools.wait_all_terminal(sqlite_url, chaos_ids, timeout=120)
        await asyncio.sleep(12)  # unknown-id receipts retry for ~10 s: let them finish, then look again
        later = tools.statuses(sqlite_url, clean_ids + chaos_ids)

    errors = dict(tools.query(sqlite_url, "SELECT id, error_code FROM messages"))
    by_kind = collections.Counter((answer_kind, status) for answer_kind, status in answers)
    mismatched = [(i, final_clean.get(a), final_chaos.get(b), errors.get(a), errors.get(b))
                  for i, (a, b) in enumerate(zip(clean_ids, chaos_ids))
                  if (final_clean.get(a), errors.get(a)) != (final_chaos.get(b), errors.get(b))]
    moved_later = sum(1 for i, s in later.items() if s != {**final_clean, **final_chaos}.get(i))
    counts_clean = tools.invariants(sqlite_url, clean_ids, final_clean)
    counts_chaos = tools.invariants(sqlite_url, chaos_ids, final_chaos)
    line = tools.report(
        "receipt chaos", messages_per_account=len(plan), chaos_sent=sent, webhook_requests=len(requests),
        fired_in_s=round(fire_seconds, 1), answers=dict(sorted(by_kind.items())), clean=counts_clean["statuses"],
        chaos=counts_chaos["statuses"], mismatched=len(mismatched), changed_afterwards=moved_later,
        chaos_more_than_one_terminal=counts_chaos["more_than_one_terminal"],
        chaos_more_than_one_usage=counts_chaos["more_than_one_usage"],
        usage_records={"clean": counts_clean["usage_records"], "chaos": counts_chaos["usage_records"]})

    assert not any(status >= 500 or status == 0 for _, status in answers), line
    assert all(status == 200 for kind, status in answers if kind in ("genuine", "unknown", "not_a_receipt")), line
    assert all(status == 403 for kind, status in answers if kind.startswith("forged")), line
    for counts in (counts_clean, counts_chaos):
        assert counts["missing"] == 0 and counts["not_terminal"] == 0, line
        assert counts["more_than_one_terminal"] == 0 and counts["more_than_one_usage"] == 0, line
    assert not mismatched, f"{mismatched[:5]}; {line}"
    assert moved_later == 0, line
    assert counts_clean["usage_records"] == counts_chaos["usage_records"], line
    expected = collections.Counter({"delivered": 3 * PER_KIND, "undelivered": PER_KIND, "failed": 2 * PER_KIND})
    assert collections.Counter(counts_chaos["statuses"]) == expected, line


async def _wait_sent_or_final(store_url: str, ids: list[str], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        current = await asyncio.to_thread(tools.statuses, store_url, ids)
        waiting = [i for i in ids if current.get(i) not in ("sent", *tools.TERMINAL)]
        if not waiting or time.monotonic() > deadline:
            assert not waiting, f"{len(waiting)} chaos messages never reached the carrier"
            return sum(1 for i in ids if current.get(i) == "sent")
        await asyncio.sleep(0.5)


def _chaos_requests(plan, chaos_ids, clean_ids, carrier_ids) -> list[tuple[str, bytes, dict]]:
    """(kind, body, headers) for every webhook call, shuffled."""
    rng = random.Random(11)
    out = []
    for kind, message_id in zip(plan, chaos_ids):
        final = KINDS[kind][1]
        carrier_id = carrier_ids.get(message_id)
        if final is None or carrier_id is None:
            continue
        body = receipt(carrier_id, message_id, final)
        out += [("genuine", body, {"X-Sandbox-Signature": sign(body)})] * 3  # duplicated
        interim = receipt(carrier_id, message_id, "accepted")  # an intermediate status, arriving after the final
        out.append(("genuine", interim, {"X-Sandbox-Signature": sign(interim)}))
        flipped = receipt(carrier_id, message_id, "undelivered" if final == "delivered" else "delivered")
        out += [
            ("forged_bad_secret", flipped, {"X-Sandbox-Signature": sign(flipped, "not-the-secret")}),
            ("forged_no_signature", flipped, {}),
            ("forged_other_body", flipped, {"X-Sandbox-Signature": sign(body)}),
        ]
    for n in range(200):  # carrier ids nobody sent; half name a real message of the other account
        ref = clean_ids[n] if n % 2 else f"msg_{uuid.uuid4().hex[:26].upper()}"
        body = receipt(f"SB{uuid.uuid4().hex}", ref, "undelivered")
        out.append(("unknown", body, {"X-Sandbox-Signature": sign(body)}))
    for body in (b"{}", b'{"status": "delivered"}', b"[]", b'"delivered"', b'{"id": null, "status": 7}'):
        out.append(("not_a_receipt", body, {"X-Sandbox-Signature": sign(body)}))
    rng.shuffle(out)  # reordered: across messages, and an interim status before or after its final
    return out


async def _fire(http: aiohttp.ClientSession, url: str, requests, concurrency: int = 16) -> list[tuple[str, int]]:
    queue: asyncio.Queue = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)
    answers: list[tuple[str, int]] = []

    async def worker():
        while not queue.empty():
            kind, body, headers = queue.get_nowait()
            try:
                async with http.post(url, data=body, headers={"Content-Type": "application/json", **headers}) as resp:
                    await resp.read()
                    answers.append((kind, resp.status))
            except aiohttp.ClientError:
                answers.append((kind, 0))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers
