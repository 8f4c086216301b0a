"""Suppressions: an unregistered push token is refused afterwards, at ingest."""
import aiohttp

from tests.engine import DEFAULT_ROUTING, SANDBOX_CARRIERS, wait_terminal


async def test_unregistered_token_is_suppressed_for_that_account_only(make_engine, sqlite_url):
    engine = make_engine(sqlite_url, SANDBOX_CARRIERS + DEFAULT_ROUTING)
    key = engine.create_account("a")["api_key"]
    other = engine.create_account("b")["api_key"]
    push = {"channel": "push", "to": "unregistered-token-1", "title": "t", "body": "b"}
    async with aiohttp.ClientSession() as http:
        async def send(api_key):
            async with http.post(f"{engine.base_url}/v1/messages", json=push,
                                 headers={"Authorization": f"Bearer {api_key}"}) as resp:
                return resp.status, await resp.json()
        status, body = await send(key)
        assert status == 202
        final = await wait_terminal(http, engine.base_url, key, [body["id"]])
        assert final[body["id"]]["status"] == "failed"
        assert final[body["id"]]["error"]["code"] == "device_unregistered"
        status, body = await send(key)
        assert (status, body["error"]["code"], body["error"]["field"]) == (400, "device_unregistered", "to")
        status, body = await send(other)  # another account's suppression list is its own
        assert status == 202
