import base64
from urllib.parse import urlencode

import aiohttp
import pytest

from carriers.base import CarrierConfig, InboundRequest, OutcomeUnknown, PermanentFailure, TemporaryFailure
from carriers.twilio import TwilioAdapter, signature
from router.errors import ConfigError
from router.messages import Channel, Envelope, Status
from tests.carriers.fakes.fake_twilio import FakeTwilio, sign_callback

PUBLIC_URL = "https://msgroute.example.com"
RECEIPT_URL = f"{PUBLIC_URL}/webhooks/dlr/twilio-us"


def adapter(base_url: str, http, **settings) -> TwilioAdapter:
    settings = {"base_url": base_url, "account_sid": "AC123", "auth_token": "token",
                "from": "+15550001111", **settings}
    return TwilioAdapter(CarrierConfig("twilio-us", "sms", settings, PUBLIC_URL), http)


def sms(**fields) -> Envelope:
    return Envelope(**{"id": "msg_01", "account_id": "acc_1", "channel": Channel.SMS,
                       "to": "+14155550100", "body": "Your code is 1234",
                       "created_at": "2024-05-01T12:00:00.000Z", **fields})


def callback(params: dict[str, str], signature_header: str | None) -> InboundRequest:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if signature_header is not None:
        headers["x-twilio-signature"] = signature_header
    return InboundRequest("POST", RECEIPT_URL, headers, urlencode(params).encode())


STATUS_CALLBACK = {
    "AccountSid": "AC123", "ApiVersion": "2010-04-01", "From": "+15550001111",
    "To": "+14155550100", "MessageSid": "SM0123456789abcdef", "SmsSid": "SM0123456789abcdef",
    "MessageStatus": "delivered", "SmsStatus": "delivered",
}


async def test_send_posts_the_twilio_form_with_basic_auth(http, monkeypatch):
    monkeypatch.setenv("TEST_TWILIO_TOKEN", "s3cret")
    async with FakeTwilio(auth_token="s3cret") as fake:
        result = await adapter(fake.base_url, http, auth_token="env:TEST_TWILIO_TOKEN").send(sms())

    [request] = fake.requests
    assert request.method == "POST"
    assert request.path == "/2010-04-01/Accounts/AC123/Messages.json"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"AC123:s3cret").decode()
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.form() == {"To": "+14155550100", "From": "+15550001111",
                              "Body": "Your code is 1234", "StatusCallback": f"{RECEIPT_URL}?ref={sms().id}"}
    assert result.carrier_message_id.startswith("SM")
    assert result.units == 1


async def test_send_uses_the_messages_own_sender(http):
    async with FakeTwilio() as fake:
        await adapter(fake.base_url, http).send(sms(sender="+15559998888"))
    assert fake.requests[0].form()["From"] == "+15559998888"


@pytest.mark.parametrize("behaviour, retry_after", [("server_error", None), ("rate_limited", 2.0)])
async def test_server_errors_and_throttling_are_temporary(http, behaviour, retry_after):
    async with FakeTwilio(behaviour) as fake:
        with pytest.raises(TemporaryFailure) as caught:
            await adapter(fake.base_url, http).send(sms())
    assert caught.value.code == "carrier_unavailable"
    assert caught.value.retry_after == retry_after


async def test_a_reply_that_never_comes_is_an_unknown_outcome_not_a_retry():
    # the request went out, so the carrier may have the message: sending again could deliver it twice
    async with FakeTwilio("slow") as fake, aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=0.2)) as http:
        with pytest.raises(OutcomeUnknown) as caught:
            await adapter(fake.base_url, http).send(sms())
    assert caught.value.code == "carrier_outcome_unknown"
    assert len(fake.requests) == 1


async def test_an_unreachable_api_is_temporary(http, closed_port):
    with pytest.raises(TemporaryFailure) as caught:
        await adapter(f"http://127.0.0.1:{closed_port}", http).send(sms())
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)


async def test_refused_credentials_are_temporary_so_another_carrier_can_take_it(http):
    async with FakeTwilio() as fake:
        with pytest.raises(TemporaryFailure, match="20003"):
            await adapter(fake.base_url, http, auth_token="wrong").send(sms())


@pytest.mark.parametrize("behaviour, code", [
    ("invalid_number", "invalid_phone_number"),
    ("opted_out", "recipient_opted_out"),
])
async def test_twilio_refusals_are_permanent_with_our_code(http, behaviour, code):
    async with FakeTwilio(behaviour) as fake:
        with pytest.raises(PermanentFailure) as caught:
            await adapter(fake.base_url, http).send(sms())
    assert caught.value.code == code


def test_signature_matches_twilios_published_example():
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
              "From": "+12349013030", "To": "+18005551212"}
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert signature("12345", url, list(params.items())) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert sign_callback("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


@pytest.mark.parametrize("twilio_status, status, error", [
    ("delivered", Status.DELIVERED, None),
    ("undelivered", Status.UNDELIVERED, "30003"),
    ("failed", Status.FAILED, "30008"),
    ("sent", Status.SENT, None),
])
def test_a_signed_status_callback_is_accepted_and_parsed(twilio_status, status, error):
    params = {**STATUS_CALLBACK, "MessageStatus": twilio_status, "SmsStatus": twilio_status}
    if error:
        params["ErrorCode"] = error
    request = callback(params, sign_callback("token", RECEIPT_URL, params))
    twilio = adapter("http://unused", None)

    assert twilio.verify_receipt(request)
    [receipt] = twilio.parse_receipt(request)
    assert receipt.carrier_message_id == "SM0123456789abcdef"
    assert receipt.status == status
    assert receipt.error_code == error


@pytest.mark.parametrize("forgery", ["wrong_token", "tampered", "other_url", "unsigned"])
def test_a_forged_status_callback_is_rejected(forgery):
    signed_params = STATUS_CALLBACK
    token, url = "token", RECEIPT_URL
    if forgery == "wrong_token":
        token = "guessed"
    if forgery == "other_url":
        url = f"{PUBLIC_URL}/webhooks/dlr/other"
    sent_params = {**STATUS_CALLBACK, "MessageStatus": "failed"} if forgery == "tampered" else signed_params
    header = None if forgery == "unsigned" else sign_callback(token, url, signed_params)

    assert not adapter("http://unused", None).verify_receipt(callback(sent_params, header))


def test_missing_credentials_are_a_config_error(monkeypatch):
    monkeypatch.delenv("TEST_TWILIO_UNSET", raising=False)
    with pytest.raises(ConfigError, match="auth_token"):
        adapter("http://unused", None, auth_token="env:TEST_TWILIO_UNSET")
