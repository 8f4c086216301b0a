"""Firebase Cloud Messaging, HTTP v1 API.

Send: POST {base_url}/v1/projects/{project_id}/messages:send with
`{"message": {"token", "notification": {"title", "body"}, "data": {str: str}}}` and an
OAuth2 bearer token. The token comes from the service account: an RS256 JWT assertion
exchanged at `token_url` (grant type jwt-bearer), cached until shortly before it expires.
The reply's `name` ("projects/<id>/messages/<id>") is the carrier message id.

FCM sends no delivery receipts, so `verify_receipt` is False and `parse_receipt` is [].
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from time import monotonic
from typing import Any

import aiohttp
import jwt
import orjson
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from carriers.base import (
    TRANSPORT_ERRORS, CarrierConfig, InboundRequest, PermanentFailure, Receipt, SendResult,
    TemporaryFailure, map_http_status, resolve_secret, transport_failure,
)
from router.errors import ConfigError
from router.messages import Envelope

DEFAULT_BASE_URL = "https://fcm.googleapis.com"
DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600  # seconds; Google's maximum
REFRESH_MARGIN = 60  # seconds before expiry at which a cached access token is replaced


def load_service_account(value: Any) -> dict[str, Any]:
    """The service-account JSON from a dict, a JSON string, or a path to a JSON file."""
    if isinstance(value, dict):
        return value
    text = str(value or "")
    if not text.lstrip().startswith("{"):
        text = Path(text).read_text(encoding="utf-8")
    return orjson.loads(text)


def _data(data: dict[str, Any] | None) -> dict[str, str]:
    """FCM data values must be strings: others are sent as JSON."""
    return {str(k): v if isinstance(v, str) else orjson.dumps(v).decode()
            for k, v in (data or {}).items()}


def _is_token_error(error: dict[str, Any]) -> bool:
    """True when FCM says the registration token itself is unknown or malformed."""
    for detail in error.get("details") or ():
        if detail.get("errorCode") == "UNREGISTERED":
            return True
        for violation in detail.get("fieldViolations") or ():
            if violation.get("field") == "message.token":
                return True
    return error.get("status") == "INVALID_ARGUMENT" and "registration token" in str(error.get("message", ""))


class FcmAdapter:
    def __init__(self, config: CarrierConfig, http: aiohttp.ClientSession):
        self.config = config
        self._http = http
        settings = {k: resolve_secret(v) for k, v in config.settings.items()}
        try:
            account = load_service_account(settings.get("service_account"))
            self._client_email = account["client_email"]
            self._private_key = load_pem_private_key(account["private_key"].encode(), password=None)
            self._key_id = account.get("private_key_id")
            project_id = settings.get("project_id") or account["project_id"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError([f"carrier {config.name}: service_account is unusable ({exc!r})"]) from exc
        base_url = str(settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        self._send_url = f"{base_url}/v1/projects/{project_id}/messages:send"
        self._token_url = str(settings.get("token_url") or DEFAULT_TOKEN_URL)
        self._token: str | None = None
        self._token_expires = 0.0  # monotonic seconds
        self._token_lock = asyncio.Lock()

    async def send(self, envelope: Envelope) -> SendResult:
        message: dict[str, Any] = {"token": envelope.to}
        notification = {k: v for k, v in (("title", envelope.title), ("body", envelope.body)) if v}
        if notification:
            message["notification"] = notification
        if envelope.data:
            message["data"] = _data(envelope.data)
        body = orjson.dumps({"message": message})

        token = await self._access_token()
        status, reply, retry_after = await self._post(body, token)
        if status == 401:  # expired or revoked access token: one fresh token, one retry
            token = await self._access_token(stale=token)
            status, reply, retry_after = await self._post(body, token)
        if status == 200 and isinstance(reply, dict) and reply.get("name"):
            return SendResult(carrier_message_id=str(reply["name"]))
        error = reply.get("error") if isinstance(reply, dict) else None
        error = error if isinstance(error, dict) else {}
        text = str(error.get("message") or reply)
        if status in (400, 404) and _is_token_error(error):
            raise PermanentFailure("device_unregistered", f"HTTP {status}: {text[:200]}")
        if status == 200:
            raise TemporaryFailure("carrier_unavailable", f"unexpected FCM reply: {text[:200]}")
        raise map_http_status(status, text, retry_after)

    async def _post(self, body: bytes, token: str) -> tuple[int, Any, str | None]:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            async with self._http.post(self._send_url, data=body, headers=headers) as resp:
                raw = await resp.read()
                return resp.status, _json(raw), resp.headers.get("Retry-After")
        except TRANSPORT_ERRORS as exc:
            raise transport_failure("fcm", exc) from exc

    async def _access_token(self, stale: str | None = None) -> str:
        """The cached access token, fetched anew when missing, near expiry, or == stale.

        Under the lock, so concurrent sends wait for one refresh instead of each making one.
        """
        async with self._token_lock:
            if self._token and self._token != stale and monotonic() < self._token_expires:
                return self._token
            now = int(time.time())
            claims = {"iss": self._client_email, "scope": SCOPE, "aud": self._token_url,
                      "iat": now, "exp": now + ASSERTION_LIFETIME}
            headers = {"kid": self._key_id} if self._key_id else None
            assertion = jwt.encode(claims, self._private_key, algorithm="RS256", headers=headers)
            started = monotonic()
            form = {"grant_type": JWT_BEARER, "assertion": assertion}
            try:
                async with self._http.post(self._token_url, data=form) as resp:
                    reply, status = _json(await resp.read()), resp.status
                    retry_after = resp.headers.get("Retry-After")
            except TRANSPORT_ERRORS as exc:
                raise TemporaryFailure("carrier_unavailable", f"FCM token endpoint: {exc!r}") from exc
            if status != 200 or not isinstance(reply, dict) or not reply.get("access_token"):
                raise map_http_status(status if status != 200 else 502, f"token endpoint: {reply}", retry_after)
            lifetime = float(reply.get("expires_in", 3600))
            self._token = str(reply["access_token"])
            self._token_expires = started + max(lifetime - REFRESH_MARGIN, lifetime / 2)
            return self._token

    def verify_receipt(self, request: InboundRequest) -> bool:
        return False

    def parse_receipt(self, request: InboundRequest) -> list[Receipt]:
        return []

    async def aclose(self) -> None:
        """Nothing of our own to close: the HTTP session belongs to the caller."""


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
