from urllib.parse import urlencode

import orjson
import pytest

from carriers.base import CarrierConfig, InboundRequest, PermanentFailure, TemporaryFailure
from carriers.vonage import VonageAdapter
from router.errors import ConfigError
from router.messages import Channel, Envelope, Status
from tests.carriers.fakes.fake_vonage import FakeVonage, sign_dlr

PUBLIC_URL = "https://msgroute.example.com"
RECEIPT_URL = f"{PUBLIC_URL}/webhooks/dlr/vonage-eu"

DLR = {
    "msisdn": "447700900000", "to": "MsgRoute", "network-code": "23410",
    "messageId": "0A0000001234ABCD", "price": "0.03330000", "status": "delivered",
    "scts": "2405011200", "err-code": "0", "api-key": "key", "client-ref": "msg_01",
    "message-timestamp": "2024-05-01 12:00:05",
}


def adapter(base_url: str, http, **settings) -> VonageAdapter:
    settings = {"base_url": base_url, "api_key": "key", "api_secret": "secret", "from": "MsgRoute",
                "signature_secret": "sigsecret", "signature_method": "md5hash", **settings}
    return VonageAdapter(CarrierConfig("vonage-eu", "sms", settings, PUBLIC_URL), http)


def sms(**fields) -> Envelope:
    return Envelope(**{"id": "msg_01", "account_id": "acc_1", "channel": Channel.SMS,
                       "to": "+447700900000", "body": "Your code is 1234",
                       "created_at": "2024-05-01T12:00:00.000Z", **fields})


def get_dlr(params: dict[str, str]) -> InboundRequest:
    query = urlencode(params)
    return InboundRequest("GET", f"{RECEIPT_URL}?{query}", {}, b"", tuple(params.items()))


def post_form_dlr(params: dict[str, str]) -> InboundRequest:
    return InboundRequest("POST", RECEIPT_URL, {"content-type": "application/x-www-form-urlencoded"},
                          urlencode(params).encode())


def post_json_dlr(params: dict[str, str]) -> InboundRequest:
    return InboundRequest("POST", RECEIPT_URL, {"content-type": "application/json"}, orjson.dumps(params))


async def test_send_posts_the_vonage_form(http, monkeypatch):
    monkeypatch.setenv("TEST_VONAGE_SECRET", "s3cret")
    async with FakeVonage(api_secret="s3cret") as fake:
        result = await adapter(fake.base_url, http, api_secret="env:TEST_VONAGE_SECRET").send(sms())

    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/sms/json")
    assert request.form() == {
        "api_key": "key", "api_secret": "s3cret", "from": "MsgRoute", "to": "447700900000",
        "text": "Your code is 1234", "callback": RECEIPT_URL, "client-ref": "msg_01",
    }
    assert result.units == 1
    assert result.carrier_price == "0.03330000"
    assert len(result.carrier_message_id) == 16


async def test_non_gsm_text_goes_as_unicode_and_parts_are_counted(http):
    async with FakeVonage() as fake:
        result = await adapter(fake.base_url, http).send(sms(body="Grüße 👋 " * 20, sender="+15550001111"))
    form = fake.requests[0].form()
    assert form["type"] == "unicode"
    assert form["from"] == "15550001111"
    assert result.units == 3


@pytest.mark.parametrize("behaviour", ["throttled", "server_error"])
async def test_throttling_and_server_errors_are_temporary(http, behaviour):
    async with FakeVonage(behaviour) as fake:
        with pytest.raises(TemporaryFailure) as caught:
            await adapter(fake.base_url, http).send(sms())
    assert caught.value.code == "carrier_unavailable"


async def test_refused_credentials_are_temporary_so_another_carrier_can_take_it(http):
    async with FakeVonage() as fake:
        with pytest.raises(TemporaryFailure, match="status 4"):
            await adapter(fake.base_url, http, api_secret="wrong").send(sms())


async def test_an_unreachable_api_is_temporary(http, closed_port):
    with pytest.raises(TemporaryFailure):
        await adapter(f"http://127.0.0.1:{closed_port}", http).send(sms())


@pytest.mark.parametrize("behaviour", ["invalid_number", "unroutable"])
async def test_an_invalid_number_is_permanent(http, behaviour):
    async with FakeVonage(behaviour) as fake:
        with pytest.raises(PermanentFailure) as caught:
            await adapter(fake.base_url, http).send(sms())
    assert caught.value.code == "invalid_phone_number"


@pytest.mark.parametrize("method, sig", [
    # the vectors of Vonage's own client library: a=1, b=2, timestamp=1461605396, secret "secret"
    ("md5hash", "6af838ef94998832dbfc29020b564830"),
    ("sha1", "3E19A4E6880FDC2C1426BFD0587C98B9532F0210"),
    ("sha256", "A321E824B9B816BE7C3F28859A31749A098713D39F613C80D455BBAFFAE1CD24"),
])
def test_signatures_match_vonages_published_vectors(method, sig):
    vonage = adapter("http://unused", None, signature_secret="secret", signature_method=method)
    assert vonage.verify_receipt(get_dlr({"a": "1", "b": "2", "timestamp": "1461605396", "sig": sig}))


@pytest.mark.parametrize("method, encoding", [
    ("md5hash", get_dlr), ("md5", post_form_dlr), ("sha1", get_dlr),
    ("sha256", post_json_dlr), ("sha512", post_form_dlr),
])
def test_a_signed_dlr_is_accepted_and_parsed(method, encoding):
    vonage = adapter("http://unused", None, signature_method=method)
    request = encoding(sign_dlr({**DLR, "client-ref": "msg_01&x=y"}, "sigsecret", method))

    assert vonage.verify_receipt(request)
    [receipt] = vonage.parse_receipt(request)
    assert receipt.carrier_message_id == "0A0000001234ABCD"
    assert receipt.status == Status.DELIVERED
    assert receipt.error_code is None
    assert receipt.extra["msgroute_id"] == "msg_01&x=y"


@pytest.mark.parametrize("vonage_status, err_code, status", [
    ("expired", "1", Status.UNDELIVERED),
    ("failed", "6", Status.UNDELIVERED),
    ("rejected", "29", Status.FAILED),
    ("buffered", "0", Status.SENT),
])
def test_dlr_outcomes(vonage_status, err_code, status):
    request = get_dlr(sign_dlr({**DLR, "status": vonage_status, "err-code": err_code}, "sigsecret"))
    [receipt] = adapter("http://unused", None).parse_receipt(request)
    assert receipt.status == status
    assert receipt.error_code == (None if err_code == "0" else err_code)


@pytest.mark.parametrize("forgery", ["wrong_secret", "tampered", "unsigned"])
def test_a_forged_dlr_is_rejected(forgery):
    params = sign_dlr(DLR, "guessed" if forgery == "wrong_secret" else "sigsecret")
    if forgery == "tampered":
        params["status"] = "failed"
    if forgery == "unsigned":
        del params["sig"]
    assert not adapter("http://unused", None).verify_receipt(get_dlr(params))


def test_without_a_signature_secret_no_dlr_is_trusted():
    request = get_dlr(sign_dlr(DLR, "sigsecret"))
    assert not adapter("http://unused", None, signature_secret="").verify_receipt(request)


@pytest.mark.parametrize("settings, problem", [
    ({"api_secret": ""}, "api_secret"),
    ({"signature_method": "sha3"}, "signature_method"),
])
def test_bad_settings_are_a_config_error(settings, problem):
    with pytest.raises(ConfigError, match=problem):
        adapter("http://unused", None, **settings)
