"""Concurrent single requests share the gateway's store transactions (workers/store/group_commit.py):
each still gets its own answer — replays of one Idempotency-Key, suppressed recipients and
fresh messages side by side, on both store backends."""
import asyncio

import aiohttp


async def test_concurrent_requests_keep_their_own_outcomes(make_engine, store_url):
    engine = make_engine(store_url)
    key = engine.create_account("a")["api_key"]
    auth = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as http:
        for n in range(10):
            async with http.post(f"{engine.base_url}/v1/suppressions", headers=auth,
                                 json={"channel": "sms", "address": f"+4479110000{n:02d}"}) as resp:
                assert resp.status == 201

        async def send(body: dict, idempotency_key: str | None = None):
            headers = {**auth, "Idempotency-Key": idempotency_key} if idempotency_key else auth
            async with http.post(f"{engine.base_url}/v1/messages", json=body, headers=headers) as resp:
                return resp.status, resp.headers.get("Idempotent-Replayed"), await resp.json()

        same = {"channel": "sms", "to": "+447911000099", "body": "once"}
        calls = ([send(same, "same-key") for _ in range(15)]
                 + [send({"channel": "sms", "to": f"+4479110000{n:02d}", "body": "no"}) for n in range(10)]
                 + [send({"channel": "sms", "to": f"+4479110001{n:02d}", "body": f"fresh {n}"}) for n in range(15)])
        outcomes = await asyncio.gather(*calls)

        replayed, suppressed, fresh = outcomes[:15], outcomes[15:25], outcomes[25:]
        assert all(status == 202 for status, _, _ in replayed)
        assert len({body["id"] for _, _, body in replayed}) == 1
        assert sorted(flag or "" for _, flag, _ in replayed) == [""] + ["true"] * 14
        assert [(status, body["error"]["code"], body["error"]["field"]) for status, _, body in suppressed] == \
            [(400, "recipient_opted_out", "to")] * 10
        assert all(status == 202 and flag is None for status, flag, _ in fresh)
        assert len({body["id"] for _, _, body in fresh}) == 15

        async with http.get(f"{engine.base_url}/v1/messages?limit=100", headers=auth) as resp:
            stored = (await resp.json())["data"]
        assert {m["id"] for m in stored} == {body["id"] for _, _, body in replayed + fresh}
