import orjson
import pytest

from carriers.base import CarrierConfig, InboundRequest, PermanentFailure, TemporaryFailure
from carriers.sendgrid import SendgridAdapter
from router.errors import ConfigError
from router.messages import Channel, Envelope, Status
from tests.carriers.fakes.fake_sendgrid import EventWebhookSigner, FakeSendgrid

RECEIPT_URL = "https://msgroute.example.com/webhooks/dlr/sendgrid"


@pytest.fixture(scope="module")
def signer():
    return EventWebhookSigner()


def adapter(base_url: str, http, **settings) -> SendgridAdapter:
    settings = {"base_url": base_url, "api_key": "SG.key", "from": "Alerts <alerts@example.com>",
                **settings}
    return SendgridAdapter(CarrierConfig("sendgrid", "email", settings), http)


def email(**fields) -> Envelope:
    return Envelope(**{"id": "msg_01", "account_id": "acc_1", "channel": Channel.EMAIL,
                       "to": "ada@example.org", "subject": "Your receipt",
                       "body": "Thanks for your order.", "created_at": "2024-05-01T12:00:00.000Z",
                       **fields})


def event_post(body: bytes, headers: dict[str, str]) -> InboundRequest:
    return InboundRequest("POST", RECEIPT_URL, headers, body)


def events(message_id: str) -> list[dict]:
    base = {"sg_message_id": f"{message_id}.filterdrecv-5645d9c87f-6r2ch-1-6629A6A1-3.0",
            "email": "ada@example.org", "timestamp": 1714564800, "msgroute_id": "msg_01"}
    return [
        {**base, "event": "processed", "sg_event_id": "e1"},
        {**base, "event": "deferred", "sg_event_id": "e2", "response": "400 try again later"},
        {**base, "event": "delivered", "sg_event_id": "e3", "response": "250 OK"},
        {**base, "event": "open", "sg_event_id": "e4"},
        {**base, "event": "bounce", "sg_event_id": "e5", "type": "bounce", "status": "5.1.1",
         "reason": "550 5.1.1 The email account does not exist."},
        {**base, "event": "dropped", "sg_event_id": "e6", "reason": "Bounced Address"},
        {**base, "event": "spamreport", "sg_event_id": "e7"},
    ]


async def test_send_posts_the_v3_mail_send_json(http, monkeypatch):
    monkeypatch.setenv("TEST_SENDGRID_KEY", "SG.s3cret")
    async with FakeSendgrid(api_key="SG.s3cret") as fake:
        result = await adapter(fake.base_url, http, api_key="env:TEST_SENDGRID_KEY").send(email())

    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/v3/mail/send")
    assert request.headers["Authorization"] == "Bearer SG.s3cret"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == {
        "personalizations": [{"to": [{"email": "ada@example.org"}]}],
        "from": {"email": "alerts@example.com", "name": "Alerts"},
        "subject": "Your receipt",
        "content": [{"type": "text/plain", "value": "Thanks for your order."}],
        "custom_args": {"msgroute_id": "msg_01"},
    }
    assert result.carrier_message_id == fake.message_ids[0]
    assert result.units == 1


@pytest.mark.parametrize("behaviour, retry_after", [("server_error", None), ("rate_limited", 3.0)])
async def test_server_errors_and_throttling_are_temporary(http, behaviour, retry_after):
    async with FakeSendgrid(behaviour) as fake:
        with pytest.raises(TemporaryFailure) as caught:
            await adapter(fake.base_url, http).send(email())
    assert caught.value.code == "carrier_unavailable"
    assert caught.value.retry_after == retry_after


async def test_a_refused_api_key_is_temporary_so_another_carrier_can_take_it(http):
    async with FakeSendgrid() as fake:
        with pytest.raises(TemporaryFailure, match="401"):
            await adapter(fake.base_url, http, api_key="SG.wrong").send(email())


async def test_an_unreachable_api_is_temporary(http, closed_port):
    with pytest.raises(TemporaryFailure):
        await adapter(f"http://127.0.0.1:{closed_port}", http).send(email())


async def test_an_invalid_address_is_permanent(http):
    async with FakeSendgrid("invalid_email") as fake:
        with pytest.raises(PermanentFailure) as caught:
            await adapter(fake.base_url, http).send(email())
    assert caught.value.code == "invalid_email"


async def test_signed_events_are_accepted_and_matched_to_the_send(http, signer):
    async with FakeSendgrid() as fake:
        sendgrid = adapter(fake.base_url, http, webhook_public_key=signer.public_key)
        sent = await sendgrid.send(email())
    body = orjson.dumps(events(sent.carrier_message_id))
    request = event_post(body, signer.headers(body))

    assert sendgrid.verify_receipt(request)
    receipts = sendgrid.parse_receipt(request)
    assert {r.carrier_message_id for r in receipts} == {sent.carrier_message_id}
    assert {r.extra["msgroute_id"] for r in receipts} == {"msg_01"}
    assert [(r.status, r.extra["event"]) for r in receipts] == [
        (Status.SENT, "processed"), (Status.SENT, "deferred"), (Status.DELIVERED, "delivered"),
        (Status.UNDELIVERED, "bounce"), (Status.UNDELIVERED, "dropped"),
        (Status.DELIVERED, "spamreport"),
    ]
    bounce, dropped, complaint = receipts[3:]
    assert (bounce.address, bounce.error_code) == ("ada@example.org", "bounce")
    assert bounce.error_message == "550 5.1.1 The email account does not exist."
    assert (dropped.address, dropped.error_message) == ("ada@example.org", "Bounced Address")
    assert complaint.address == "ada@example.org"
    assert receipts[2].address is None


@pytest.mark.parametrize("forgery", [
    "other_key", "tampered_body", "tampered_timestamp", "garbage", "unsigned",
])
def test_forged_events_are_rejected(signer, forgery):
    body = orjson.dumps(events("abc123"))
    headers = (EventWebhookSigner() if forgery == "other_key" else signer).headers(body, "1714564800")
    if forgery == "tampered_body":
        body = body.replace(b'"bounce"', b'"delivered"')
    if forgery == "tampered_timestamp":
        headers["x-twilio-email-event-webhook-timestamp"] = "1714564801"
    if forgery == "garbage":
        headers["x-twilio-email-event-webhook-signature"] = "not base64!"
    if forgery == "unsigned":
        del headers["x-twilio-email-event-webhook-signature"]

    sendgrid = adapter("http://unused", None, webhook_public_key=signer.public_key)
    assert not sendgrid.verify_receipt(event_post(body, headers))


def test_without_a_public_key_no_event_is_trusted(signer):
    body = orjson.dumps(events("abc123"))
    assert not adapter("http://unused", None).verify_receipt(event_post(body, signer.headers(body)))


@pytest.mark.parametrize("settings, problem", [
    ({"api_key": ""}, "api_key"),
    ({"webhook_public_key": "bm90IGEga2V5"}, "webhook_public_key"),
])
def test_bad_settings_are_a_config_error(settings, problem):
    with pytest.raises(ConfigError, match=problem):
        adapter("http://unused", None, **settings)
