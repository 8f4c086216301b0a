"""Fake SendGrid v3 Mail Send API, and SendGrid's side of the signed Event Webhook."""
from __future__ import annotations

import base64
import time
import uuid

from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.carriers.fakes.http import FakeHttpCarrier

ERRORS = {  # behaviour -> (HTTP status, errors[], extra headers)
    "server_error": (500, [{"message": "internal error", "field": None}], {}),
    "rate_limited": (429, [{"message": "too many requests", "field": None}], {"Retry-After": "3"}),
    "invalid_email": (400, [{"message": "Does not contain a valid address.",
                             "field": "personalizations.0.to.0.email"}], {}),
}


class EventWebhookSigner:
    """Holds an Event Webhook key pair, as SendGrid does for an account."""

    def __init__(self):
        self._key = ec.generate_private_key(ec.SECP256R1())
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public_key = base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: str | None = None) -> dict[str, str]:
        timestamp = timestamp or str(int(time.time()))
        signature = self._key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "x-twilio-email-event-webhook-signature": base64.b64encode(signature).decode(),
            "x-twilio-email-event-webhook-timestamp": timestamp,
            "content-type": "application/json",
        }


class FakeSendgrid(FakeHttpCarrier):
    """Behaviours: happy, server_error, rate_limited, invalid_email."""

    def __init__(self, behaviour: str = "happy", api_key: str = "SG.key"):
        super().__init__(behaviour)
        self.api_key = api_key
        self.message_ids: list[str] = []

    def routes(self):
        return [web.post("/v3/mail/send", self._send)]

    async def _send(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, [{"message": "The provided authorization grant is invalid, expired, "
                                            "or revoked", "field": None}], {})
        if self.behaviour in ERRORS:
            return _error(*ERRORS[self.behaviour])
        await request.json()
        message_id = uuid.uuid4().hex[:22]
        self.message_ids.append(message_id)
        return web.Response(status=202, headers={"X-Message-Id": message_id})


def _error(status: int, errors: list[dict], headers: dict) -> web.Response:
    return web.json_response({"errors": errors}, status=status, headers=headers)
