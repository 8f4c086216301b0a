"""Every SPEC §4 error: its status code and error code, from a real gateway."""
import asyncio
import io

import aiohttp
import orjson

from tests.engine import wait_terminal
from tests.integration.test_engine import CONFIG

SMS = {"channel": "sms", "to": "+447911123456", "body": "hi"}

# (name, request body (dict → JSON) or raw bytes, headers override, status, code, field)
CASES = [
    ("invalid_json", b"{not json", None, 400, "invalid_json", None),
    ("lone surrogate", b'{"channel": "sms", "to": "+447911123456", "body": "\\ud800"}', None, 400,
     "invalid_json", None),
    ("deep nesting", b'{"channel": "sms", "metadata": ' + b"[" * 200 + b"]" * 200 + b"}", None, 400,
     "invalid_json", None),
    ("missing to", {"channel": "sms", "body": "x"}, None, 400, "invalid_request", "to"),
    ("unknown field", {**SMS, "colour": "red"}, None, 400, "invalid_request", "colour"),
    ("wrong type", {**SMS, "validity_period": "soon"}, None, 400, "invalid_request", "validity_period"),
    ("unknown_channel", {**SMS, "channel": "fax"}, None, 400, "unknown_channel", "channel"),
    ("invalid_phone_number", {**SMS, "to": "+4479"}, None, 400, "invalid_phone_number", "to"),
    ("not e164", {**SMS, "to": "07911123456"}, None, 400, "invalid_phone_number", "to"),
    ("invalid_email", {"channel": "email", "to": "no-at-sign", "body": "x"}, None, 400, "invalid_email", "to"),
    ("email header injection", {"channel": "email", "to": "a@example.com\r\nBcc: b@example.com", "body": "x"},
     None, 400, "invalid_email", "to"),
    ("invalid_device_token", {"channel": "push", "to": "bad token!", "body": "x"}, None, 400,
     "invalid_device_token", "to"),
    ("apns token not hex", {"channel": "push", "to": "abc12345", "platform": "apns", "body": "x"}, None, 400,
     "invalid_device_token", "to"),
    ("sms body_too_long", {**SMS, "body": "x" * 1601}, None, 400, "body_too_long", "body"),
    ("push body_too_long", {"channel": "push", "to": "token-12345678", "body": "x" * 5000}, None, 400,
     "body_too_long", "body"),
    ("email body_too_long", {"channel": "email", "to": "a@example.com", "body": "x" * (256 * 1024 + 1)}, None, 400,
     "body_too_long", "body"),
    ("metadata_too_large", {**SMS, "metadata": {"k": "v" * 5000}}, None, 400, "metadata_too_large", "metadata"),
    ("invalid_callback_url", {**SMS, "callback_url": "ftp://example.com/x"}, None, 400, "invalid_callback_url",
     "callback_url"),
    ("invalid_sender", {**SMS, "from": "not a valid sender!"}, None, 400, "invalid_sender", "from"),
    ("invalid_send_at format", {**SMS, "send_at": "tomorrow"}, None, 400, "invalid_send_at", "send_at"),
    ("invalid_send_at past", {**SMS, "send_at": "2020-01-01T00:00:00Z"}, None, 400, "invalid_send_at", "send_at"),
    ("no auth", SMS, {"Authorization": ""}, 401, "unauthorized", None),
    ("bad key", SMS, {"Authorization": "Bearer mrk_nope"}, 401, "unauthorized", None),
    ("unsupported_media_type", b"channel=sms", {"Content-Type": "application/x-www-form-urlencoded"}, 415,
     "unsupported_media_type", None),
    ("payload_too_large", b'{"body": "' + b"x" * (2 * 1024 * 1024) + b'"}', None, 413, "payload_too_large", None),
]


async def test_every_validation_error_has_its_status_and_code(make_engine, sqlite_url):
    engine = make_engine(sqlite_url, CONFIG)
    key = engine.create_account("v")["api_key"]
    failures = []
    async with aiohttp.ClientSession() as http:
        for name, body, headers, status, code, field in CASES:
            all_headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **(headers or {})}
            all_headers = {k: v for k, v in all_headers.items() if v}
            data = io.BytesIO(body if isinstance(body, bytes) else orjson.dumps(body))
            async with http.post(f"{engine.base_url}/v1/messages", data=data, headers=all_headers) as resp:
                payload = await resp.json(content_type=None)
                got = (resp.status, payload.get("error", {}).get("code"), payload.get("error", {}).get("field"))
            if got != (status, code, field):
                failures.append((name, got, (status, code, field)))
        # batch: per-item errors next to accepted items; a malformed batch is refused whole
        batch = {"messages": [SMS, {**SMS, "to": "+1"}, {"channel": "fax"}]}
        async with http.post(f"{engine.base_url}/v1/messages/batch", json=batch,
                             headers={"Authorization": f"Bearer {key}"}) as resp:
            assert resp.status == 202
            results = (await resp.json())["results"]
        assert "id" in results[0]
        assert results[1]["error"]["code"] == "invalid_phone_number"
        assert results[2]["error"]["code"] == "unknown_channel"
        for bad in ({"messages": []}, {"messages": [SMS] * 1001}, {"nope": 1}):
            async with http.post(f"{engine.base_url}/v1/messages/batch", json=bad,
                                 headers={"Authorization": f"Bearer {key}"}) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["code"] == "invalid_request"
        async with http.get(f"{engine.base_url}/v1/messages/msg_nope",
                            headers={"Authorization": f"Bearer {key}"}) as resp:
            assert (resp.status, (await resp.json())["error"]["code"]) == (404, "not_found")
    assert not failures, failures


async def test_no_route_and_region_not_allowed_are_rejected_after_routing(make_engine, sqlite_url):
    engine = make_engine(sqlite_url, CONFIG)
    us_only = engine.create_account("us-only", "--regions", "us-east")["api_key"]
    anywhere = engine.create_account("anywhere")["api_key"]
    async with aiohttp.ClientSession() as http:
        async def send(key, body):
            async with http.post(f"{engine.base_url}/v1/messages", json=body,
                                 headers={"Authorization": f"Bearer {key}"}) as resp:
                assert resp.status == 202
                return (await resp.json())["id"]
        region = await send(us_only, SMS)  # only sms-uk serves +44, and it is in uk-south
        allowed = await send(us_only, {**SMS, "to": "+14155550123"})  # sms-us serves +1 in us-east
        no_route = await send(anywhere, {**SMS, "to": "+4915123456789"})  # nobody serves +49
        final = await wait_terminal(http, engine.base_url, us_only, [region, allowed], timeout=60)
        final.update(await wait_terminal(http, engine.base_url, anywhere, [no_route], timeout=60))
    assert final[region]["status"] == "rejected"
    assert final[region]["error"]["code"] == "region_not_allowed"
    assert final[allowed]["status"] == "delivered"
    assert final[allowed]["region"] == "us-east"
    assert final[no_route]["status"] == "rejected"
    assert final[no_route]["error"]["code"] == "no_route"
    assert not any(asyncio.iscoroutine(x) for x in final.values())
