"""Scheduled send: held durably, released once on time (across a restart), cancelable before."""
import time
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest

from tests.engine import DEFAULT_ROUTING, SANDBOX_CARRIERS, wait_terminal


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_scheduled_messages_survive_a_restart_fire_once_on_time_and_cancel(make_engine, sqlite_url):
    engine = make_engine(sqlite_url, SANDBOX_CARRIERS + DEFAULT_ROUTING)
    key = engine.create_account("s")["api_key"]
    auth = {"Authorization": f"Bearer {key}"}
    send_at = datetime.now(timezone.utc) + timedelta(seconds=70)
    stamp = send_at.isoformat().replace("+00:00", "Z")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{engine.base_url}/v1/messages/batch", headers=auth, json={"messages": [
                {"channel": "sms", "to": "+447400123456", "body": f"later {n}", "send_at": stamp}
                for n in range(5)]}) as resp:
            results = (await resp.json())["results"]
        assert {r["status"] for r in results} == {"scheduled"}
        ids = [r["id"] for r in results]
        async with http.delete(f"{engine.base_url}/v1/messages/{ids[0]}", headers=auth) as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "canceled"
        async with http.delete(f"{engine.base_url}/v1/messages/{ids[0]}", headers=auth) as resp:
            assert (resp.status, (await resp.json())["error"]["code"]) == (409, "not_cancelable")
        async with http.get(f"{engine.base_url}/v1/messages/{ids[1]}", headers=auth) as resp:
            assert (await resp.json())["status"] == "scheduled"

    assert engine.stop() == 0  # nothing about the schedule lives in a process
    engine.start()

    async with aiohttp.ClientSession() as http:
        while datetime.now(timezone.utc) < send_at - timedelta(seconds=3):
            async with http.get(f"{engine.base_url}/v1/messages/{ids[1]}", headers=auth) as resp:
                assert (await resp.json())["status"] == "scheduled", "released early"
            time.sleep(1)
        final = await wait_terminal(http, engine.base_url, key, ids, timeout=60)
        async with http.delete(f"{engine.base_url}/v1/messages/{ids[1]}", headers=auth) as resp:
            assert (resp.status, (await resp.json())["error"]["code"]) == (409, "not_cancelable")
    assert final[ids[0]]["status"] == "canceled"
    for message_id in ids[1:]:
        message = final[message_id]
        assert message["status"] == "delivered"
        history = [h["status"] for h in message["status_history"]]
        assert history == ["scheduled", "queued", "routed", "sent", "delivered"]
        released = datetime.fromisoformat(message["status_history"][1]["at"].replace("Z", "+00:00"))
        assert timedelta(0) <= released - send_at < timedelta(seconds=5), released - send_at
    usage = engine.cli("usage", "export", "--format", "jsonl").stdout.splitlines()
    assert len(usage) == 4  # each fired once
