"""ApnsAdapter against a fake APNs (HTTP/2 only, `h2` over asyncio) on 127.0.0.1."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import carriers.apns as apns
from carriers.apns import ApnsAdapter, apns_id
from carriers.base import CarrierConfig, InboundRequest, OutcomeUnknown, PermanentFailure, TemporaryFailure
from tests.carriers.fakes.fake_apns import FakeApns
from router.errors import ConfigError
from router.messages import Channel, Envelope

TEAM_ID = "TEAM123456"
KEY_ID = "KEY7654321"
TOPIC = "com.example.app"


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def p8(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture
async def fake(ec_key):
    async with FakeApns(public_key=ec_key.public_key(), team_id=TEAM_ID, key_id=KEY_ID, topic=TOPIC) as server:
        yield server


@pytest.fixture
async def make_adapter(fake, ec_key, tmp_path):
    path = tmp_path / f"AuthKey_{KEY_ID}.p8"
    path.write_text(p8(ec_key))
    adapters: list[ApnsAdapter] = []

    def make(**overrides) -> ApnsAdapter:
        settings = {"base_url": fake.url, "team_id": TEAM_ID, "key_id": KEY_ID,
                    "private_key": str(path), "topic": TOPIC, **overrides}
        adapters.append(ApnsAdapter(CarrierConfig(name="apns", channel="push", settings=settings), None))
        return adapters[-1]

    yield make
    for adapter in adapters:
        await adapter.aclose()


def push(to: str = "happy0123abcd", id: str = "msg_01HZX", **fields) -> Envelope:
    return Envelope(id=id, account_id="acc_1", channel=Channel.PUSH, to=to,
                    created_at="2024-05-01T12:00:00Z", **fields)


async def test_send_speaks_http2_with_a_verified_provider_token(fake, make_adapter):
    adapter = make_adapter()
    result = await adapter.send(push(title="Hi", body="Your order shipped", data={"order": 42},
                                     expires_at="2030-01-01T00:00:00Z"))

    expected_id = str(uuid.uuid5(apns.APNS_ID_NAMESPACE, "msg_01HZX"))
    assert result.carrier_message_id == expected_id
    [request] = fake.requests  # the fake speaks only HTTP/2
    assert request.method == "POST"
    assert request.path == "/3/device/happy0123abcd"
    assert request.headers["apns-topic"] == TOPIC
    assert request.headers["apns-push-type"] == "alert"
    assert request.headers["apns-id"] == expected_id
    assert request.headers["apns-expiration"] == "1893456000"
    assert request.headers["authorization"].startswith("bearer ")
    assert request.json() == {"aps": {"alert": {"title": "Hi", "body": "Your order shipped"}}, "order": 42}
    assert request.jwt_header == {"alg": "ES256", "typ": "JWT", "kid": KEY_ID}
    assert set(request.jwt_claims) == {"iss", "iat"}
    assert request.jwt_claims["iss"] == TEAM_ID


async def test_apns_id_is_stable_per_message(fake, make_adapter):
    adapter = make_adapter()
    first = await adapter.send(push(id="msg_A", title="Hi"))
    again = await adapter.send(push(id="msg_A", title="Hi"))
    other = await adapter.send(push(id="msg_B", title="Hi"))
    assert first.carrier_message_id == again.carrier_message_id == apns_id("msg_A")
    assert other.carrier_message_id == apns_id("msg_B") != first.carrier_message_id


async def test_data_cannot_replace_aps(fake, make_adapter):
    await make_adapter().send(push(title="Hi", data={"aps": "spoofed", "k": "v"}))
    assert fake.requests[0].json() == {"aps": {"alert": {"title": "Hi"}}, "k": "v"}


async def test_private_key_from_the_environment(fake, make_adapter, ec_key, monkeypatch):
    monkeypatch.setenv("APNS_KEY", p8(ec_key))
    result = await make_adapter(private_key="env:APNS_KEY").send(push(title="Hi"))
    assert result.carrier_message_id == apns_id("msg_01HZX")
    assert fake.requests[0].jwt_claims["iss"] == TEAM_ID


async def test_missing_settings_are_a_config_error(make_adapter):
    with pytest.raises(ConfigError, match="topic"):
        make_adapter(topic="")


@pytest.mark.parametrize(("token", "retry_after"),
                         [("throttled-1", None), ("internal-1", None), ("unavailable-1", 5.0)])
async def test_server_errors_and_throttling_are_temporary(fake, make_adapter, token, retry_after):
    with pytest.raises(TemporaryFailure) as caught:
        await make_adapter().send(push(token, title="Hi"))
    assert caught.value.code == "carrier_unavailable"
    assert caught.value.retry_after == retry_after


@pytest.mark.parametrize("token", ["unregistered-1", "baddevice-1"])
async def test_unregistered_or_bad_device_token_is_device_unregistered(fake, make_adapter, token):
    with pytest.raises(PermanentFailure) as caught:
        await make_adapter().send(push(token, title="Hi"))
    assert caught.value.code == "device_unregistered"


async def test_other_rejections_are_carrier_rejected(fake, make_adapter):
    with pytest.raises(PermanentFailure) as caught:
        await make_adapter().send(push("othertopic-1", title="Hi"))
    assert (caught.value.code, caught.value.message) == ("carrier_rejected", "HTTP 400: DeviceTokenNotForTopic")
    with pytest.raises(PermanentFailure) as caught:
        await make_adapter(key_id="WRONGKEY00").send(push(title="Hi"))
    assert (caught.value.code, caught.value.message) == ("carrier_rejected", "HTTP 403: InvalidProviderToken")


async def test_provider_token_and_connection_are_reused(fake, make_adapter):
    adapter = make_adapter()
    await adapter.send(push(title="Hi"))
    await asyncio.gather(*(adapter.send(push(f"device{i}", id=f"msg_{i}", title="Hi")) for i in range(10)))
    assert len(fake.requests) == 11
    assert len(fake.bearers) == 1
    assert fake.connections == 1  # concurrent sends multiplexed on one HTTP/2 connection


async def test_provider_token_is_resigned_after_50_minutes(fake, make_adapter, monkeypatch):
    adapter = make_adapter()
    await adapter.send(push(title="Hi"))
    later = apns.monotonic() + 50 * 60
    monkeypatch.setattr(apns, "monotonic", lambda: later)
    await adapter.send(push(title="Hi"))
    await adapter.send(push(title="Hi"))

    assert len(fake.bearers) == 2
    assert all(r.jwt_claims and r.jwt_claims["iss"] == TEAM_ID for r in fake.requests)


async def test_expired_provider_token_is_resigned_and_temporary(fake, make_adapter):
    adapter = make_adapter()
    await adapter.send(push(title="Hi"))
    fake.expired_tokens.add(fake.bearers[0])
    with pytest.raises(TemporaryFailure) as caught:
        await adapter.send(push(title="Hi"))
    assert caught.value.message == "HTTP 403: ExpiredProviderToken"
    result = await adapter.send(push(title="Hi"))

    assert result.carrier_message_id == apns_id("msg_01HZX")
    assert len(fake.bearers) == 2
    assert fake.requests[-1].bearer == fake.bearers[1]


async def test_unreachable_carrier_is_temporary(make_adapter, closed_port):
    with pytest.raises(TemporaryFailure) as caught:
        await make_adapter(base_url=f"http://127.0.0.1:{closed_port}").send(push(title="Hi"))
    assert caught.value.code == "carrier_unavailable"


async def test_a_reply_that_never_comes_is_an_unknown_outcome_not_a_retry(fake, make_adapter):
    # APNs took the stream, so the device may be notified: sending again could notify it twice
    with pytest.raises(OutcomeUnknown) as caught:
        await make_adapter(timeout=0.3).send(push(to="silent0123abcd", title="Hi"))
    assert caught.value.code == "carrier_outcome_unknown"
    assert len(fake.requests) == 1


async def test_apns_has_no_receipts(make_adapter):
    adapter = make_adapter()
    request = InboundRequest(method="POST", url="http://127.0.0.1/webhooks/dlr/apns", headers={}, body=b"{}")
    assert adapter.verify_receipt(request) is False
    assert adapter.parse_receipt(request) == []
