"""Vonage SMS API.

Send: POST {base_url}/sms/json, form-encoded, credentials in the body. Numbers go without
the leading '+'. The reply lists one entry per part in `messages`; each has a `status`
("0" is success) and a `message-id`.

Receipts (DLRs) come as a GET query string, a form POST or a JSON POST with `messageId`,
`msisdn`, `status`, `err-code` and our `client-ref`. With signed webhooks enabled they
carry `timestamp` and `sig`: over "&k=v" for every other parameter sorted by name (with
'&' and '=' in values replaced by '_'), either md5 of that string + secret (`md5hash`)
or an HMAC of it keyed with the secret (`md5`, `sha1`, `sha256`, `sha512`).
"""
from __future__ import annotations

import hashlib
import hmac
import re
from decimal import Decimal, InvalidOperation

import aiohttp
import orjson

from carriers.base import (
    TRANSPORT_ERRORS, CarrierConfig, InboundRequest, PermanentFailure, Receipt, SendResult,
    TemporaryFailure, map_http_status, resolve_secret, transport_failure,
)
from router.errors import ConfigError
from router.messages import Envelope, Status

DEFAULT_BASE_URL = "https://rest.nexmo.com"
SIGNATURE_METHODS = {"md5hash", "md5", "sha1", "sha256", "sha512"}

# Non-zero `status` values of a send reply. Throttling, outages and account-level
# problems (credentials, balance, configuration) are temporary: another carrier may
# still take the message. Everything else is about this message, so permanent.
TEMPORARY_STATUSES = {
    "1": "throttled", "4": "invalid credentials", "5": "internal error",
    "8": "account barred", "9": "quota exceeded", "10": "too many binds",
    "11": "account not enabled for HTTP", "14": "invalid signature",
    "23": "invalid callback url", "32": "signature and api secret disallowed",
}
INVALID_NUMBER_STATUSES = {"6", "33"}  # unroutable prefix, number deactivated

STATUSES = {
    "delivered": Status.DELIVERED,
    "failed": Status.UNDELIVERED,  # the handset could not be reached
    "expired": Status.UNDELIVERED,
    "rejected": Status.FAILED,  # refused before it went out
}  # accepted, buffered, unknown: intermediate → SENT

# GSM 03.38 basic set and extension table: text outside it goes as type=unicode.
GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
    "\f^{}\\[~]|€"
)


def signature(params: dict[str, str], secret: str, method: str) -> str:
    """Vonage's signature over params (without `sig`); lower-case hex."""
    payload = "".join(
        f"&{key}={str(params[key]).replace('&', '_').replace('=', '_')}" for key in sorted(params)
    ).encode()
    if method == "md5hash":
        return hashlib.md5(payload + secret.encode()).hexdigest()
    return hmac.new(secret.encode(), payload, method).hexdigest()


class VonageAdapter:
    def __init__(self, config: CarrierConfig, http: aiohttp.ClientSession):
        self.config = config
        self._http = http
        settings = {k: resolve_secret(v) for k, v in config.settings.items()}
        missing = [k for k in ("api_key", "api_secret") if not settings.get(k)]
        if missing:
            raise ConfigError([f"carrier {config.name}: missing setting {k}" for k in missing])
        self._api_key = str(settings["api_key"])
        self._api_secret = str(settings["api_secret"])
        self._signature_secret = str(settings.get("signature_secret") or "")
        self._signature_method = str(settings.get("signature_method") or "md5hash").lower()
        if self._signature_method not in SIGNATURE_METHODS:
            raise ConfigError([f"carrier {config.name}: signature_method must be one of "
                               f"{', '.join(sorted(SIGNATURE_METHODS))}"])
        self._from = settings.get("from")
        self._url = f"{str(settings.get('base_url') or DEFAULT_BASE_URL).rstrip('/')}/sms/json"

    async def send(self, envelope: Envelope) -> SendResult:
        sender = envelope.sender or self._from
        if not sender:
            raise PermanentFailure("invalid_sender", "vonage: no sender (set `from`)")
        text = envelope.body or ""
        form = {
            "api_key": self._api_key,
            "api_secret": self._api_secret,
            "from": str(sender).lstrip("+"),
            "to": envelope.to.lstrip("+"),
            "text": text,
            "callback": self.config.receipt_url,
            "client-ref": envelope.id,
        }
        if not set(text) <= GSM7:
            form["type"] = "unicode"
        try:
            async with self._http.post(self._url, data=form) as resp:
                body = (await resp.read()).decode("utf-8", "replace")
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except TRANSPORT_ERRORS as exc:
            raise transport_failure("vonage", exc) from exc
        if status >= 400:
            raise map_http_status(status, f"vonage: {body[:200]}", retry_after)
        try:
            parts = orjson.loads(body)["messages"]
            statuses = [(str(p.get("status")), p.get("error-text", "")) for p in parts]
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise TemporaryFailure("carrier_unavailable", f"vonage: unreadable reply: {body[:200]}") from exc
        for code, error_text in statuses:
            if code != "0":
                raise _error(code, error_text)
        if not parts or not parts[0].get("message-id"):
            raise TemporaryFailure("carrier_unavailable", f"vonage: reply without a message id: {body[:200]}")
        # A long text is split into parts, each with its own id and its own receipt; the first
        # id stands for the message, and all of them are kept so that every part's receipt
        # maps back (the status worker aggregates them: router/parts.py).
        ids = tuple(str(p.get("message-id") or "") for p in parts)
        return SendResult(
            carrier_message_id=ids[0],
            units=len(parts),
            carrier_price=_total_price(parts),
            part_ids=ids if len(ids) > 1 and all(ids) else (),
        )

    def verify_receipt(self, request: InboundRequest) -> bool:
        if not self._signature_secret:
            return False  # without signed webhooks a receipt cannot be told from a forgery
        params = _params(request)
        given = str(params.pop("sig", ""))
        if not (given and given.isascii() and given.isprintable()) or "timestamp" not in params:
            return False  # (a hex digest is printable ASCII)
        expected = signature(params, self._signature_secret, self._signature_method)
        # md5hash signatures are lower-case hex, the HMAC ones upper-case.
        return hmac.compare_digest(given.lower().encode(), expected.encode())

    def parse_receipt(self, request: InboundRequest) -> list[Receipt]:
        params = _params(request)
        message_id = params.get("messageId") or params.get("message-id")
        if not message_id:
            return []
        raw = str(params.get("status", "")).lower()
        error = str(params.get("err-code", "0"))
        extra = {"carrier_status": raw}
        if params.get("client-ref"):
            extra["msgroute_id"] = str(params["client-ref"])
        return [Receipt(
            carrier_message_id=str(message_id),
            status=STATUSES.get(raw, Status.SENT),
            error_code=error if error != "0" else None,
            extra=extra,
        )]

    async def aclose(self) -> None:
        pass  # the shared session belongs to the worker


def _error(code: str, text: str):
    message = f"vonage status {code}: {text or TEMPORARY_STATUSES.get(code, 'rejected')}"
    if code in TEMPORARY_STATUSES:
        return TemporaryFailure("carrier_unavailable", message)
    # status 3 ("invalid parameters") names the parameter in its text: "Invalid to address"
    if code in INVALID_NUMBER_STATUSES or (code == "3" and re.search(r"\bto\b", text.lower())):
        return PermanentFailure("invalid_phone_number", message)
    return PermanentFailure("carrier_rejected", message)


def _params(request: InboundRequest) -> dict[str, str]:
    if request.method == "POST" and request.body.lstrip().startswith(b"{"):
        try:
            payload = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return {}
        return {str(k): str(v) for k, v in payload.items()} if isinstance(payload, dict) else {}
    return request.form()


def _total_price(parts: list[dict]) -> str | None:
    prices = [p.get("message-price") for p in parts]
    if any(p in (None, "") for p in prices):
        return None
    try:
        return str(sum((Decimal(str(p)) for p in prices), Decimal(0)))
    except InvalidOperation:
        return None
