"""Credentials that are not printable ASCII (a byte the HTTP parser keeps as a surrogate escape,
non-ASCII text, control characters) are refused like any wrong credential: a 401 from the
bearer-token parser, False from an adapter's signature check. Never an exception from hashing
or hmac (which would be a 500)."""
from types import SimpleNamespace

import pytest
from multidict import CIMultiDict

from carriers.base import CarrierConfig, InboundRequest
from carriers.sandbox import SandboxAdapter
from carriers.sandbox import sign as sandbox_sign
from carriers.twilio import TwilioAdapter
from carriers.vonage import VonageAdapter
from router.errors import ValidationError
from workers.gateway.auth import bearer

NOT_ASCII = [
    "\udcffabc",  # the byte 0xff, as aiohttp's parser hands it over (surrogateescape)
    "\u00e9\u00e9",  # é é: valid UTF-8, not ASCII
    "ab\tcd",  # a control character inside
]
URL = "https://msgroute.example.com/webhooks/dlr/carrier"


def _request(authorization: str):
    # (a stand-in: aiohttp's mocked request re-encodes its headers, which a surrogate escape cannot survive)
    return SimpleNamespace(headers=CIMultiDict({"Authorization": authorization}))


@pytest.mark.parametrize("token", NOT_ASCII)
def test_a_bearer_token_that_is_not_printable_ascii_is_a_401(token):
    with pytest.raises(ValidationError) as caught:
        bearer(_request(f"Bearer {token}"))
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")


def test_a_printable_ascii_bearer_token_is_returned_stripped():
    assert bearer(_request("Bearer  mrk_abc-DEF_123 ")) == "mrk_abc-DEF_123"
    with pytest.raises(ValidationError):
        bearer(_request("Bearer "))


@pytest.mark.parametrize("given", NOT_ASCII)
def test_sandbox_refuses_a_signature_that_is_not_ascii(given):
    sandbox = SandboxAdapter(CarrierConfig("sms", "sms", {"webhook_secret": "s3cret"}), None)
    body = b'{"id":"x","status":"delivered"}'
    assert not sandbox.verify_receipt(InboundRequest("POST", URL, {"x-sandbox-signature": given}, body))
    signed = sandbox_sign("s3cret", body)
    assert sandbox.verify_receipt(InboundRequest("POST", URL, {"x-sandbox-signature": signed}, body))


@pytest.mark.parametrize("given", NOT_ASCII)
def test_twilio_refuses_a_signature_that_is_not_ascii(given):
    twilio = TwilioAdapter(CarrierConfig("twilio", "sms", {
        "base_url": "http://unused", "account_sid": "AC1", "auth_token": "token", "from": "+15005550006"}), None)
    request = InboundRequest("POST", URL, {"x-twilio-signature": given}, b"MessageSid=SM1&MessageStatus=delivered")
    assert not twilio.verify_receipt(request)


@pytest.mark.parametrize("given", NOT_ASCII)
def test_vonage_refuses_a_signature_that_is_not_ascii(given):
    vonage = VonageAdapter(CarrierConfig("vonage", "sms", {
        "base_url": "http://unused", "api_key": "key", "api_secret": "secret", "from": "MsgRoute",
        "signature_secret": "sigsecret", "signature_method": "sha256"}), None)
    params = (("messageId", "1"), ("timestamp", "1461605396"), ("sig", given))
    assert not vonage.verify_receipt(InboundRequest("GET", URL, {}, b"", params))



async def test_a_webhook_header_that_is_not_utf8_can_still_be_queued():
    """Raw bytes on the wire (as a carrier or an attacker might send them) through aiohttp's own parser."""
    import asyncio

    from aiohttp import web

    from workers.gateway.webhooks import decode_inbound, encode_inbound, to_inbound

    seen = []

    async def handler(request):
        inbound = await to_inbound(request, "http://127.0.0.1:8080")
        seen.append(decode_inbound(encode_inbound("sms-uk", inbound, "receipt"))[2])
        return web.Response()

    app = web.Application()
    app.router.add_post("/webhooks/dlr/sms-uk", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", runner.addresses[0][1])
        writer.write(b"POST /webhooks/dlr/sms-uk HTTP/1.1\r\nHost: x\r\nX-Other: caf\xc3\xa9 \xff\r\n"
                     b"X-Sandbox-Signature: abc\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        status_line = await reader.readline()
        writer.close()
    finally:
        await runner.cleanup()
    assert status_line.startswith(b"HTTP/1.1 200"), status_line
    assert seen[0].headers["x-other"].startswith("caf\u00e9 \ufffd")
    assert seen[0].headers["x-sandbox-signature"] == "abc"
