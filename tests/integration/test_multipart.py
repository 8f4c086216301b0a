"""Multipart SMS on a real engine: Vonage gives each part its own id and its own receipt, and
the parts' receipts aggregate into one status (router/parts.py)."""
import asyncio

import aiohttp
import orjson

from router.messages import Status
from tests.carriers.fakes.fake_vonage import FakeVonage
from tests.engine import wait_terminal
from tests.integration.account_tools import EventTap, eventually
from tests.integration.test_routing_health import REGION
from workers.store import open_store, parts

LONG = "The quick brown fox jumps over the lazy dog. " * 8  # 360 GSM-7 characters: 3 parts


def vonage_carrier(fake: FakeVonage) -> str:
    return f"""
[[carriers]]
name = "vonage"
channel = "sms"
adapter = "vonage"
region = "uk-south"
receipts = true
settings = {{ base_url = "{fake.base_url}", api_key = "key", api_secret = "secret", signature_secret = "sigsecret", signature_method = "md5hash", from = "MsgRoute" }}
rates = {{ "44" = "0.0300", currency = "USD" }}
"""


def outcome(part: int, parts: int, form: dict) -> tuple[str, str]:
    """The handset for +447400000002 misses part 2 of its messages; +447400000003 is barred,
    so every part after the first is rejected there."""
    if form["to"] == "447400000002" and part == 2:
        return "failed", "1"
    if form["to"] == "447400000003" and part > 1:
        return "rejected", "6"
    return "delivered", "0"


async def test_parts_receipts_aggregate_into_one_status(make_engine, store_url):
    async with FakeVonage(dlrs=True, dlr_delay=0.3, outcome=outcome) as fake:
        engine = make_engine(store_url, REGION + vonage_carrier(fake))
        key = engine.create_account()["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession() as http, EventTap(engine.amqp_url, "status.sms.#") as tap:
            async def send(to: str, body: str) -> str:
                async with http.post(f"{engine.base_url}/v1/messages", headers=auth,
                                     json={"channel": "sms", "to": to, "body": body}) as resp:
                    assert resp.status == 202, await resp.text()
                    return (await resp.json())["id"]

            whole = await send("+447400000001", LONG)
            gap = await send("+447400000002", LONG)
            barred = await send("+447400000003", LONG)
            short = await send("+447400000002", "one part")
            final = await wait_terminal(http, engine.base_url, key, [whole, gap, barred, short], timeout=60)
            await fake.dlrs_settled()
            assert len(fake.dlrs_sent) == 10 and {d.status for d in fake.dlrs_sent} == {200}

            async def resource(message_id: str) -> dict:
                async with http.get(f"{engine.base_url}/v1/messages/{message_id}", headers=auth) as resp:
                    return await resp.json()

            async def all_parts_final(message_id: str):
                message = await resource(message_id)
                return message if all(p["status"] != "sent" for p in message["parts"]) else None
            settled = {m: await eventually(lambda m=m: all_parts_final(m)) for m in (whole, gap, barred)}
            await asyncio.sleep(1)  # any stray event would have arrived by now
            events = []
            while not tap.events.empty():
                events.append(tap.events.get_nowait()[1])

    # every part delivered: delivered, once
    message = settled[whole]
    assert message["status"] == "delivered" and message["error"] is None and message["units"] == 3
    [sent_parts] = [parts for form, parts in fake.accepted if form["to"] == "447400000001"]
    assert [p["part"] for p in message["parts"]] == [1, 2, 3]
    assert {p["status"] for p in message["parts"]} == {"delivered"}
    assert [p["carrier_message_id"] for p in message["parts"]] == [p["message-id"] for p in sent_parts]
    assert [h["status"] for h in message["status_history"]] == ["queued", "routed", "sent", "delivered"]

    # part 2 undelivered: the message is undelivered with that part's carrier error, and the
    # parts that were delivered stay recorded as such
    message = settled[gap]
    assert final[gap]["status"] == message["status"] == "undelivered"
    assert message["error"] == {"code": "1", "message": "part 2 of 3 undelivered (carrier error 1)"}
    assert [p["status"] for p in message["parts"]] == ["delivered", "undelivered", "delivered"]
    assert [h["status"] for h in message["status_history"]] == ["queued", "routed", "sent", "undelivered"]

    # parts 2 and 3 rejected at the carrier (Vonage "rejected" -> failed): failed, with part 2 named
    message = settled[barred]
    assert message["status"] == "failed" and message["error"]["code"] == "6"
    assert message["error"]["message"].startswith("part 2 of 3 failed") or \
        message["error"]["message"].startswith("part 3 of 3 failed")  # whichever receipt came first
    assert [p["status"] for p in message["parts"]] == ["delivered", "failed", "failed"]

    # a one-part message is unchanged: its single receipt decides, no parts listed
    assert final[short]["status"] == "delivered" and "parts" not in final[short]

    # exactly one final status event per message, whatever the number of part receipts
    finals = [(e["message_id"], e["status"]) for e in events if e["status"] not in ("queued", "routed", "sent")]
    assert sorted(finals) == sorted([(whole, "delivered"), (gap, "undelivered"), (barred, "failed"),
                                     (short, "delivered")])
    usage = {orjson.loads(line)["message_id"]: orjson.loads(line)
             for line in engine.cli("usage", "export", "--format", "jsonl").stdout.splitlines()}
    assert {m: usage[m]["status"] for m in (whole, gap, barred, short)} == {
        whole: "delivered", gap: "undelivered", barred: "failed", short: "delivered"}
    assert usage[whole]["units"] == 3


async def test_concurrent_part_receipts_settle_the_message_exactly_once(store_url):
    """Status workers taking receipts for different parts of one message at the same time: the
    one that records the last part sees the others' (the message row is locked first)."""
    store = await open_store(store_url, migrate=True)
    try:
        now = "2026-01-01T00:00:00.000Z"
        ids = [f"msg_{n:03d}" for n in range(20)]

        def _insert(cur):
            for message_id in ids:
                cur.execute("INSERT INTO messages (id, account_id, channel, status, carrier, carrier_message_id, "
                            "units, attempt, created_at, updated_at) VALUES (?, 'acc', 'sms', 'sent', 'vonage', ?, "
                            "4, 1, ?, ?)", (message_id, f"{message_id}-1", now, now))
                for part in range(1, 5):
                    cur.execute(parts.INSERT, ("vonage", f"{message_id}-{part}", message_id, part, 4, now))
        await store.run(_insert)
        results = await asyncio.gather(*(
            parts.record(store, [("vonage", f"{m}-{p}", Status.DELIVERED, None, now)])
            for m in ids for p in range(1, 5)))  # the parts of one message side by side
        decided: dict[str, int] = {}
        for outcome in results:
            for message_id, o in outcome.items():
                assert o.status == Status.DELIVERED
                decided[message_id] = decided.get(message_id, 0) + 1
        assert decided == {m: 1 for m in ids}  # each settled, by exactly one of its receipts
        # a receipt redelivered after a crash settles a message that is still `sent` again
        assert (await parts.record(store, [("vonage", f"{ids[0]}-4", Status.DELIVERED, None, now)]))[ids[0]] \
            .status == Status.DELIVERED
        # … but not one already final, unless it is what decides it
        await store.run(lambda cur: cur.execute("UPDATE messages SET status = 'delivered' WHERE id = ?", (ids[0],)))
        assert await parts.record(store, [("vonage", f"{ids[0]}-4", Status.DELIVERED, None, now)]) == {}
        # a message the receipt timeout closed: its parts' late receipts settle it once (-> late_receipts)
        def _closed(cur):
            cur.execute("INSERT INTO messages (id, account_id, channel, status, error_code, units, attempt, "
                        "created_at, updated_at) VALUES ('msg_late', 'acc', 'sms', 'undelivered', 'receipt_timeout', "
                        "2, 1, ?, ?)", (now, now))
            cur.executemany(parts.INSERT, [("vonage", f"late-{n}", "msg_late", n, 2, now) for n in (1, 2)])
        await store.run(_closed)
        assert await parts.record(store, [("vonage", "late-1", Status.DELIVERED, None, now)]) == {}
        assert (await parts.record(store, [("vonage", "late-2", Status.DELIVERED, None, now)]))["msg_late"].status \
            == Status.DELIVERED
        assert await parts.record(store, [("vonage", "late-2", Status.DELIVERED, None, now)]) == {}
    finally:
        await store.close()
