"""Usage records: one per message that reached a carrier, updated (never duplicated) by receipts."""
import asyncio

import aiohttp
import orjson

from carriers.sandbox import DEFAULT_SECRET, sign
from tests.engine import DEFAULT_ROUTING, SANDBOX_CARRIERS, wait_terminal


def export(engine) -> list[dict]:
    return [orjson.loads(line) for line in engine.cli("usage", "export", "--format", "jsonl").stdout.splitlines()]


async def post_receipt(http, engine, carrier: str, payload: dict, secret: str = DEFAULT_SECRET) -> int:
    body = orjson.dumps(payload)
    async with http.post(f"{engine.base_url}/webhooks/dlr/{carrier}", data=body,
                         headers={"Content-Type": "application/json", "X-Sandbox-Signature": sign(secret, body)}) \
            as resp:
        return resp.status


async def test_duplicate_late_and_forged_receipts_never_add_or_change_records(make_engine, sqlite_url):
    engine = make_engine(sqlite_url, SANDBOX_CARRIERS + DEFAULT_ROUTING)
    key = engine.create_account("u")["api_key"]
    auth = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{engine.base_url}/v1/messages/batch", headers=auth, json={"messages": [
                {"channel": "sms", "to": "+447400123456", "body": "a" * 161},  # two segments
                {"channel": "sms", "to": "+15005550003", "body": "bounces"}]}) as resp:
            ids = [r["id"] for r in (await resp.json())["results"]]
        final = await wait_terminal(http, engine.base_url, key, ids)
        assert [final[i]["status"] for i in ids] == ["delivered", "undelivered"]
        records = {r["message_id"]: r for r in export(engine)}
        delivered = records[ids[0]]
        assert (delivered["units"], delivered["unit"], delivered["status"]) == (2, "segment", "delivered")
        assert delivered["cost"] == "0.060000" and delivered["price"] == "0.075000"
        assert delivered["destination"] == "GB" and delivered["currency"] == "USD"

        carrier_id = delivered["carrier_message_id"]
        # the same receipt again, then a contradicting late one, then a forged one
        assert await post_receipt(http, engine, "sms-uk", {"id": carrier_id, "status": "delivered"}) == 200
        assert await post_receipt(http, engine, "sms-uk", {"id": carrier_id, "status": "undelivered"}) == 200
        assert await post_receipt(http, engine, "sms-uk", {"id": carrier_id, "status": "undelivered"},
                                  secret="forged") == 403
        assert await post_receipt(http, engine, "sms-uk", {"id": "SB-unknown", "status": "delivered"}) == 200
        await asyncio.sleep(3)
        async with http.get(f"{engine.base_url}/v1/messages/{ids[0]}", headers=auth) as resp:
            message = await resp.json()
        assert message["status"] == "delivered"
        assert [h["status"] for h in message["status_history"]] == ["queued", "routed", "sent", "delivered"]
        after = export(engine)
        assert len(after) == 2 and {r["message_id"]: r for r in after}[ids[0]] == delivered

        async with http.get(f"{engine.base_url}/v1/usage?group_by=carrier", headers=auth) as resp:
            summary = await resp.json()
        assert summary["totals"] == {"messages": 2, "units": 3, "price": "0.084875"}
        assert [g["key"] for g in summary["data"]] == ["sms-uk", "sms-us"]
        async with http.get(f"{engine.base_url}/v1/usage?group_by=week", headers=auth) as resp:
            assert resp.status == 400
