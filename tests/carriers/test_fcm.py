"""FcmAdapter against a fake FCM (HTTP v1 + OAuth2 token endpoint) on 127.0.0.1."""
from __future__ import annotations

import asyncio
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import carriers.fcm as fcm
from carriers.base import CarrierConfig, InboundRequest, PermanentFailure, TemporaryFailure
from carriers.fcm import FcmAdapter
from tests.carriers.fakes.fake_fcm import FCM_SCOPE, JWT_BEARER, FakeFcm
from router.errors import ConfigError
from router.messages import Channel, Envelope

CLIENT_EMAIL = "msgroute@demo-project.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def fake(rsa_key):
    async with FakeFcm(public_key=rsa_key.public_key(), client_email=CLIENT_EMAIL) as server:
        yield server


def service_account(key: rsa.RSAPrivateKey) -> str:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return json.dumps({
        "type": "service_account", "project_id": "demo-project", "private_key_id": "key-1",
        "private_key": pem, "client_email": CLIENT_EMAIL,
        "token_uri": "https://oauth2.googleapis.com/token",
    })


@pytest.fixture
def make_adapter(fake, http, rsa_key, tmp_path):
    path = tmp_path / "service-account.json"
    path.write_text(service_account(rsa_key))
    adapters = []

    def make(**overrides) -> FcmAdapter:
        settings = {"base_url": fake.url, "token_url": fake.token_url, "project_id": "demo-project",
                    "service_account": str(path), **overrides}
        adapters.append(FcmAdapter(CarrierConfig(name="fcm", channel="push", settings=settings), http))
        return adapters[-1]

    yield make


def push(to: str = "happy-device", **fields) -> Envelope:
    return Envelope(id="msg_01HZX", account_id="acc_1", channel=Channel.PUSH, to=to,
                    created_at="2024-05-01T12:00:00Z", **fields)


async def test_send_speaks_http_v1_with_a_verified_oauth_token(fake, make_adapter):
    adapter = make_adapter()
    result = await adapter.send(push(title="Hi", body="Your order shipped",
                                     data={"order": 42, "kind": "shipping", "tags": ["a"]}))

    assert result.carrier_message_id == "projects/demo-project/messages/1"
    [sent] = fake.sends
    assert sent.path == "/v1/projects/demo-project/messages:send"
    assert sent.headers["authorization"] == "Bearer ya29.fake-1"
    assert sent.headers["content-type"] == "application/json"
    assert sent.json == {"message": {
        "token": "happy-device",
        "notification": {"title": "Hi", "body": "Your order shipped"},
        "data": {"order": "42", "kind": "shipping", "tags": '["a"]'},
    }}
    assert fake.problems == []
    [grant] = fake.token_requests
    assert grant.form["grant_type"] == JWT_BEARER
    assert grant.header == {"alg": "RS256", "typ": "JWT", "kid": "key-1"}
    assert grant.claims["iss"] == CLIENT_EMAIL
    assert grant.claims["scope"] == FCM_SCOPE
    assert grant.claims["aud"] == fake.token_url
    assert grant.claims["exp"] - grant.claims["iat"] == 3600


async def test_service_account_json_from_the_environment(fake, make_adapter, rsa_key, monkeypatch):
    monkeypatch.setenv("FCM_SERVICE_ACCOUNT", service_account(rsa_key))
    adapter = make_adapter(service_account="env:FCM_SERVICE_ACCOUNT")
    result = await adapter.send(push(title="Hi"))
    assert result.carrier_message_id == "projects/demo-project/messages/1"
    assert fake.sends[0].json == {"message": {"token": "happy-device", "notification": {"title": "Hi"}}}


async def test_unusable_service_account_is_a_config_error(make_adapter, tmp_path):
    with pytest.raises(ConfigError, match="service_account"):
        make_adapter(service_account=str(tmp_path / "missing.json"))


@pytest.mark.parametrize(("token", "retry_after"), [("unavailable-1", 7.0), ("quota-1", 30.0), ("internal-1", None)])
async def test_server_errors_and_throttling_are_temporary(fake, make_adapter, token, retry_after):
    with pytest.raises(TemporaryFailure) as caught:
        await make_adapter().send(push(token, title="Hi"))
    assert caught.value.code == "carrier_unavailable"
    assert caught.value.retry_after == retry_after


@pytest.mark.parametrize("token", ["unregistered-1", "invalid-1"])
async def test_unknown_or_malformed_device_token_is_device_unregistered(fake, make_adapter, token):
    with pytest.raises(PermanentFailure) as caught:
        await make_adapter().send(push(token, title="Hi"))
    assert caught.value.code == "device_unregistered"


async def test_other_bad_request_is_carrier_rejected(fake, make_adapter):
    with pytest.raises(PermanentFailure) as caught:
        await make_adapter().send(push("badpayload-1", title="Hi"))
    assert caught.value.code == "carrier_rejected"
    assert "Invalid data payload key" in caught.value.message


async def test_access_token_is_fetched_once_for_many_sends(fake, make_adapter):
    adapter = make_adapter()
    for _ in range(3):
        await adapter.send(push(title="Hi"))
    await asyncio.gather(*(adapter.send(push(f"device-{i}", title="Hi")) for i in range(10)))

    assert len(fake.token_requests) == 1
    assert len(fake.sends) == 13
    assert {s.headers["authorization"] for s in fake.sends} == {"Bearer ya29.fake-1"}


async def test_concurrent_first_sends_share_one_token_fetch(fake, make_adapter):
    adapter = make_adapter()
    await asyncio.gather(*(adapter.send(push(f"device-{i}", title="Hi")) for i in range(10)))
    assert len(fake.token_requests) == 1


async def test_access_token_is_refreshed_before_it_expires(fake, make_adapter, monkeypatch):
    adapter = make_adapter()
    await adapter.send(push(title="Hi"))
    later = fcm.monotonic() + 3600 - 30  # inside the refresh margin of a 3600 s token
    monkeypatch.setattr(fcm, "monotonic", lambda: later)
    await adapter.send(push(title="Hi"))

    assert len(fake.token_requests) == 2
    assert [s.headers["authorization"] for s in fake.sends] == ["Bearer ya29.fake-1", "Bearer ya29.fake-2"]


async def test_401_refreshes_the_token_once_and_retries(fake, make_adapter):
    adapter = make_adapter()
    await adapter.send(push(title="Hi"))
    fake.revoke_all()
    result = await adapter.send(push(title="Hi"))

    assert result.carrier_message_id == "projects/demo-project/messages/2"
    assert len(fake.token_requests) == 2
    assert [s.headers["authorization"] for s in fake.sends] == [
        "Bearer ya29.fake-1", "Bearer ya29.fake-1", "Bearer ya29.fake-2"]


async def test_401_after_a_fresh_token_is_not_retried_again(fake, make_adapter):
    adapter = make_adapter()
    fake.accept_tokens = False
    with pytest.raises(PermanentFailure) as caught:
        await adapter.send(push(title="Hi"))
    assert caught.value.code == "carrier_rejected"
    assert len(fake.token_requests) == 2
    assert len(fake.sends) == 2


async def test_refused_assertion_is_carrier_rejected(fake, make_adapter):
    adapter = make_adapter()
    fake.client_email = "someone-else@example.com"
    with pytest.raises(PermanentFailure) as caught:
        await adapter.send(push(title="Hi"))
    assert caught.value.code == "carrier_rejected"
    assert fake.problems == ["iss 'msgroute@demo-project.iam.gserviceaccount.com'"]
    assert fake.sends == []


async def test_unreachable_carrier_is_temporary(fake, make_adapter, closed_port):
    adapter = make_adapter(base_url=f"http://127.0.0.1:{closed_port}")
    with pytest.raises(TemporaryFailure) as caught:
        await adapter.send(push(title="Hi"))
    assert caught.value.code == "carrier_unavailable"
    assert len(fake.token_requests) == 1


async def test_fcm_has_no_receipts(make_adapter):
    adapter = make_adapter()
    request = InboundRequest(method="POST", url="http://127.0.0.1/webhooks/dlr/fcm", headers={}, body=b"{}")
    assert adapter.verify_receipt(request) is False
    assert adapter.parse_receipt(request) == []
