"""Apple Push Notification service over HTTP/2 with token (.p8) authentication.

Send: POST {base_url}/3/device/{token} with `{"aps": {"alert": {"title", "body"}}, ...data}`
and the headers `authorization: bearer <ES256 provider JWT>`, `apns-topic`,
`apns-push-type: alert` and `apns-id`, a UUID derived from our message id so a resend of
the same message carries the same id. The provider token is re-signed every 50 minutes
(Apple accepts it for an hour and refuses refreshes more often than every 20 minutes).

APNs speaks only HTTP/2, so this adapter owns an httpx client with HTTP/1.1 disabled (the
aiohttp session it is given is not used). Over https it trusts the system CA store and
`SSL_CERT_FILE`; over http:// (local fakes) it speaks HTTP/2 with prior knowledge.

APNs sends no delivery receipts, so `verify_receipt` is False and `parse_receipt` is [].
"""
from __future__ import annotations

import ssl
import time
import uuid
from datetime import datetime
from pathlib import Path
from time import monotonic
from urllib.parse import quote

import aiohttp
import httpx
import jwt
import orjson
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from carriers.base import (
    CarrierConfig, InboundRequest, OutcomeUnknown, PermanentFailure, Receipt, SendResult, TemporaryFailure,
    map_http_status, resolve_secret,
)
from router.errors import ConfigError
from router.messages import Envelope

DEFAULT_BASE_URL = "https://api.push.apple.com"
TOKEN_LIFETIME = 50 * 60  # seconds a provider token is reused
APNS_ID_NAMESPACE = uuid.UUID("5b0e2c8e-3d4f-5a51-9a57-6d7367726f75")  # fixed: ids must be stable
UNREGISTERED_REASONS = {"Unregistered", "BadDeviceToken"}
# failures before the request could reach APNs: safe to send again. Any other transport
# error (a read timeout, a reset or GOAWAY after the stream was sent) may follow a push APNs
# took, and APNs does not deduplicate by apns-id, so sending again could notify twice.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol,
                   httpx.LocalProtocolError)


def apns_id(message_id: str) -> str:
    """The apns-id for one of our messages: the same on every attempt."""
    return str(uuid.uuid5(APNS_ID_NAMESPACE, message_id))


def load_private_key(value: str):
    """The .p8 key from its PEM text or a path to the file."""
    pem = value if "-----BEGIN" in value else Path(value).read_text(encoding="utf-8")
    return load_pem_private_key(pem.encode(), password=None)


def _expiration(expires_at: str | None) -> str | None:
    """apns-expiration (unix seconds) from our RFC 3339 validity deadline."""
    if not expires_at:
        return None
    try:
        return str(int(datetime.fromisoformat(expires_at.replace("Z", "+00:00")).timestamp()))
    except ValueError:
        return None


class ApnsAdapter:
    def __init__(self, config: CarrierConfig, http: aiohttp.ClientSession | None = None):
        self.config = config
        settings = {k: resolve_secret(v) for k, v in config.settings.items()}
        missing = [k for k in ("team_id", "key_id", "private_key", "topic") if not settings.get(k)]
        if missing:
            raise ConfigError([f"carrier {config.name}: missing setting {k}" for k in missing])
        try:
            self._key = load_private_key(str(settings["private_key"]))
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError([f"carrier {config.name}: private_key is unusable ({exc!r})"]) from exc
        self._team_id = str(settings["team_id"])
        self._key_id = str(settings["key_id"])
        self._topic = str(settings["topic"])
        self._base_url = str(settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        self._client = httpx.AsyncClient(
            http1=False, http2=True, verify=ssl.create_default_context(),
            timeout=httpx.Timeout(float(settings.get("timeout", 10)), connect=5.0),
        )
        self._jwt: str | None = None
        self._jwt_made = 0.0  # monotonic seconds

    def _provider_token(self) -> str:
        if self._jwt is None or monotonic() - self._jwt_made >= TOKEN_LIFETIME:
            claims = {"iss": self._team_id, "iat": int(time.time())}
            self._jwt = jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self._key_id})
            self._jwt_made = monotonic()
        return self._jwt

    async def send(self, envelope: Envelope) -> SendResult:
        alert = {k: v for k, v in (("title", envelope.title), ("body", envelope.body)) if v}
        payload = {**(envelope.data or {}), "aps": {"alert": alert}}
        token = self._provider_token()
        headers = {
            "authorization": f"bearer {token}",
            "apns-topic": self._topic,
            "apns-push-type": "alert",
            "apns-id": apns_id(envelope.id),
            "content-type": "application/json",
        }
        if expiration := _expiration(envelope.expires_at):
            headers["apns-expiration"] = expiration
        try:
            resp = await self._client.post(f"{self._base_url}/3/device/{quote(envelope.to, safe='')}",
                                           content=orjson.dumps(payload), headers=headers)
        except NOT_SENT_ERRORS as exc:
            raise TemporaryFailure("carrier_unavailable", f"APNs: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise OutcomeUnknown("carrier_outcome_unknown", f"APNs: {exc!r}") from exc
        if resp.status_code == 200:
            return SendResult(carrier_message_id=resp.headers.get("apns-id", headers["apns-id"]))
        try:
            reason = str(orjson.loads(resp.content).get("reason", ""))
        except (orjson.JSONDecodeError, AttributeError):
            reason = resp.text[:200]
        if resp.status_code in (400, 410) and reason in UNREGISTERED_REASONS:
            raise PermanentFailure("device_unregistered", f"HTTP {resp.status_code}: {reason}")
        if resp.status_code == 403 and reason == "ExpiredProviderToken":
            if self._jwt == token:  # the first send to learn it re-signs; the others reuse that
                self._jwt = None
            raise TemporaryFailure("carrier_unavailable", "HTTP 403: ExpiredProviderToken")
        raise map_http_status(resp.status_code, reason, resp.headers.get("retry-after"))

    def verify_receipt(self, request: InboundRequest) -> bool:
        return False

    def parse_receipt(self, request: InboundRequest) -> list[Receipt]:
        return []

    async def aclose(self) -> None:
        await self._client.aclose()
