"""Twilio Programmable Messaging (SMS), over its REST wire format.

Send: POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json, form-encoded, HTTP
Basic auth (account_sid:auth_token); the reply's `sid` is the carrier message id.

Receipts: Twilio POSTs a form to the StatusCallback URL we pass with every message,
signed in `X-Twilio-Signature`: base64 HMAC-SHA1(auth_token, full URL + every POST
parameter as name + value, sorted by name).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qsl

import aiohttp
import orjson

from carriers.base import (
    InboundMessage,
    TRANSPORT_ERRORS, CarrierConfig, InboundRequest, PermanentFailure, Receipt, SendResult,
    TemporaryFailure, map_http_status, resolve_secret, transport_failure,
)
from router.errors import ConfigError
from router.messages import Envelope, Status

DEFAULT_BASE_URL = "https://api.twilio.com"

# Twilio error codes (the JSON `code` of a 4xx reply) that have a code of our own.
ERROR_CODES = {
    21211: "invalid_phone_number",  # invalid 'To' number
    21614: "invalid_phone_number",  # 'To' is not a mobile number
    21610: "recipient_opted_out",  # the recipient replied STOP
}
# Account or configuration problems: another carrier may still take the message.
ACCOUNT_ERRORS = {20003, 20005}  # authentication failed, account not active

STATUSES = {
    "delivered": Status.DELIVERED,
    "read": Status.DELIVERED,
    "undelivered": Status.UNDELIVERED,
    "failed": Status.FAILED,
    "canceled": Status.FAILED,
}  # queued, accepted, sending, sent, scheduled: intermediate → SENT


def signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    payload = url + "".join(k + v for k, v in sorted(set(params)))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class TwilioAdapter:
    def __init__(self, config: CarrierConfig, http: aiohttp.ClientSession):
        self.config = config
        self._http = http
        settings = {k: resolve_secret(v) for k, v in config.settings.items()}
        missing = [k for k in ("account_sid", "auth_token") if not settings.get(k)]
        if missing:
            raise ConfigError([f"carrier {config.name}: missing setting {k}" for k in missing])
        self._account_sid = str(settings["account_sid"])
        self._auth_token = str(settings["auth_token"])
        self._from = settings.get("from")
        credentials = base64.b64encode(f"{self._account_sid}:{self._auth_token}".encode()).decode()
        self._headers = {"Authorization": f"Basic {credentials}"}
        base_url = str(settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        self._url = f"{base_url}/2010-04-01/Accounts/{self._account_sid}/Messages.json"

    async def send(self, envelope: Envelope) -> SendResult:
        sender = envelope.sender or self._from
        if not sender:
            raise PermanentFailure("invalid_sender", "twilio: no sender (set `from`)")
        form = {
            "To": envelope.to,
            "From": sender,
            "Body": envelope.body or "",
            # our id rides along, so a receipt maps back even if we never learnt the MessageSid
            "StatusCallback": f"{self.config.receipt_url}?ref={envelope.id}",
        }
        try:
            async with self._http.post(self._url, data=form, headers=self._headers) as resp:
                text = (await resp.read()).decode("utf-8", "replace")
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except TRANSPORT_ERRORS as exc:
            raise transport_failure("twilio", exc) from exc
        reply = _json(text)
        if status >= 400:
            raise _error(status, text, reply, retry_after)
        if not reply.get("sid"):
            raise TemporaryFailure("carrier_unavailable", f"twilio: unreadable reply: {text[:200]}")
        return SendResult(
            carrier_message_id=str(reply["sid"]),
            units=_int(reply.get("num_segments")),
            carrier_price=_price(reply.get("price")),
        )

    def verify_receipt(self, request: InboundRequest) -> bool:
        given = request.header("x-twilio-signature")
        if not (given and given.isascii() and given.isprintable()):  # a base64 digest is printable ASCII
            return False
        params = _post_params(request)
        expected = signature(self._auth_token, request.url, params)
        return hmac.compare_digest(given.encode(), expected.encode())

    def parse_receipt(self, request: InboundRequest) -> list[Receipt]:
        form = request.form()
        sid = form.get("MessageSid") or form.get("SmsSid")
        if not sid:
            return []
        raw = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
        error = form.get("ErrorCode") or None
        return [Receipt(
            carrier_message_id=sid,
            status=STATUSES.get(raw, Status.SENT),
            error_code=error if error and error != "0" else None,
            error_message=form.get("ErrorMessage") or None,
            extra={"carrier_status": raw, "msgroute_id": dict(request.query).get("ref")},
        )]

    def parse_inbound(self, request: InboundRequest) -> InboundMessage | None:
        """Twilio's incoming-message webhook: a signed form with From, To, Body, MessageSid."""
        form = request.form()
        if not form.get("From") or not form.get("To"):
            return None
        return InboundMessage(sender=form["From"], to=form["To"], body=form.get("Body", ""),
                              carrier_message_id=form.get("MessageSid"))

    async def aclose(self) -> None:
        pass  # the shared session belongs to the worker


def _error(status: int, text: str, reply: dict, retry_after: str | None):
    code = reply.get("code")
    message = f"twilio {code or status}: {reply.get('message') or text[:200]}"
    if code in ERROR_CODES:
        return PermanentFailure(ERROR_CODES[code], message)
    if status in (401, 403) or code in ACCOUNT_ERRORS:
        return TemporaryFailure("carrier_unavailable", message)
    return map_http_status(status, message, retry_after)


def _post_params(request: InboundRequest) -> list[tuple[str, str]]:
    if request.method != "POST" or not request.body:
        return []  # a GET callback is signed over its URL (query included) alone
    return parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True)


def _json(text: str) -> dict:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _price(value) -> str | None:
    # Twilio reports prices as negative decimal strings ("-0.00750"), often null at send.
    if value in (None, ""):
        return None
    return str(value).lstrip("-")
