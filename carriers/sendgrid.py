"""SendGrid v3 Mail Send (email).

Send: POST {base_url}/v3/mail/send with a Bearer API key and a JSON body; SendGrid answers
202 with the message id in the `X-Message-Id` header. Our message id goes along in
`custom_args`, so every event about it carries `msgroute_id`.

Receipts: the Event Webhook POSTs a JSON array of events. Each event's `sg_message_id`
is the X-Message-Id followed by '.' and a suffix. Requests are signed with ECDSA P-256 /
SHA-256 over the `X-Twilio-Email-Event-Webhook-Timestamp` header + the raw body; the
base64 DER signature is in `X-Twilio-Email-Event-Webhook-Signature`. Bounce, dropped and
spamreport receipts carry the recipient's `address` (for the suppression list) and every
receipt names its SendGrid event in `extra["event"]`.
"""
from __future__ import annotations

import base64
import binascii
from email.utils import parseaddr

import aiohttp
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from carriers.base import (
    TRANSPORT_ERRORS, CarrierConfig, InboundRequest, PermanentFailure, Receipt, SendResult,
    TemporaryFailure, map_http_status, resolve_secret, transport_failure,
)
from router.errors import ConfigError
from router.messages import Envelope, Status

DEFAULT_BASE_URL = "https://api.sendgrid.com"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

STATUSES = {
    "delivered": Status.DELIVERED,
    "spamreport": Status.DELIVERED,  # a complaint: it arrived, and the address is suppressed
    "bounce": Status.UNDELIVERED,
    "dropped": Status.UNDELIVERED,
    "processed": Status.SENT,
    "deferred": Status.SENT,
}  # engagement events (open, click, unsubscribe, ...) are not delivery outcomes


def _load_public_key(value: str) -> ec.EllipticCurvePublicKey:
    key = serialization.load_der_public_key(base64.b64decode(value, validate=True))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an ECDSA key")
    return key


class SendgridAdapter:
    def __init__(self, config: CarrierConfig, http: aiohttp.ClientSession):
        self.config = config
        self._http = http
        settings = {k: resolve_secret(v) for k, v in config.settings.items()}
        if not settings.get("api_key"):
            raise ConfigError([f"carrier {config.name}: missing setting api_key"])
        self._headers = {"Authorization": f"Bearer {settings['api_key']}"}
        self._from = settings.get("from")
        self._url = f"{str(settings.get('base_url') or DEFAULT_BASE_URL).rstrip('/')}/v3/mail/send"
        self._public_key = None  # without it, no receipt is trusted
        if settings.get("webhook_public_key"):
            try:
                self._public_key = _load_public_key(str(settings["webhook_public_key"]))
            except (ValueError, TypeError, binascii.Error) as exc:
                raise ConfigError([f"carrier {config.name}: webhook_public_key is unusable ({exc})"]) from exc

    async def send(self, envelope: Envelope) -> SendResult:
        sender = envelope.sender or self._from
        if not sender:
            raise PermanentFailure("invalid_sender", "sendgrid: no sender (set `from`)")
        name, address = parseaddr(str(sender))
        payload = {
            "personalizations": [{"to": [{"email": envelope.to}]}],
            "from": {"email": address, **({"name": name} if name else {})},
            "subject": envelope.subject or "",
            "content": [{"type": "text/plain", "value": envelope.body or ""}],
            "custom_args": {"msgroute_id": envelope.id},
        }
        try:
            async with self._http.post(self._url, data=orjson.dumps(payload), headers={
                **self._headers, "Content-Type": "application/json",
            }) as resp:
                text = (await resp.read()).decode("utf-8", "replace")
                status, headers = resp.status, resp.headers
        except TRANSPORT_ERRORS as exc:
            raise transport_failure("sendgrid", exc) from exc
        if status >= 400:
            raise _error(status, text, headers.get("Retry-After"))
        message_id = headers.get("X-Message-Id")
        if not message_id:
            raise TemporaryFailure("carrier_unavailable", f"sendgrid: HTTP {status} without X-Message-Id")
        return SendResult(carrier_message_id=message_id, units=1)

    def verify_receipt(self, request: InboundRequest) -> bool:
        signature = request.header(SIGNATURE_HEADER)
        timestamp = request.header(TIMESTAMP_HEADER)
        if self._public_key is None or not signature or not timestamp:
            return False
        try:
            self._public_key.verify(
                base64.b64decode(signature, validate=True),
                timestamp.encode() + request.body,
                ec.ECDSA(hashes.SHA256()),
            )
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True

    def parse_receipt(self, request: InboundRequest) -> list[Receipt]:
        events = orjson.loads(request.body)
        receipts = []
        for event in events if isinstance(events, list) else []:
            name = event.get("event") if isinstance(event, dict) else None
            if name not in STATUSES or not event.get("sg_message_id"):
                continue
            extra = {"event": name}
            if event.get("msgroute_id"):
                extra["msgroute_id"] = str(event["msgroute_id"])
            failed = STATUSES[name] == Status.UNDELIVERED
            receipts.append(Receipt(
                carrier_message_id=str(event["sg_message_id"]).split(".", 1)[0],
                status=STATUSES[name],
                error_code=name if failed else None,
                error_message=(event.get("reason") or event.get("response")) if failed else None,
                address=event.get("email") if name in ("bounce", "dropped", "spamreport") else None,
                extra=extra,
            ))
        return receipts

    async def aclose(self) -> None:
        pass  # the shared session belongs to the worker


def _error(status: int, text: str, retry_after: str | None):
    try:
        errors = [e for e in orjson.loads(text).get("errors") or [] if isinstance(e, dict)]
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        errors = []
    detail = "; ".join(str(e.get("message")) for e in errors) or text[:200]
    message = f"sendgrid HTTP {status}: {detail}"
    # A refused API key or sender identity is about the account, not this message.
    if status in (401, 403):
        return TemporaryFailure("carrier_unavailable", message)
    # e.g. field "personalizations.0.to.0.email": "Does not contain a valid address."
    if status == 400 and any(".to." in str(e.get("field") or "") for e in errors):
        return PermanentFailure("invalid_email", message)
    return map_http_status(status, message, retry_after)
