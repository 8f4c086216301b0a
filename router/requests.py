"""Untrusted send requests (HTTP or AMQP) -> a validated, normalised SendRequest,
or a ValidationError with a stable code and the offending field (SPEC §4).

The pydantic model is also the source of the OpenAPI schema.
"""
from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

import orjson
import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationError as PydanticError

from router import clock
from router.errors import ValidationError
from router.messages import Channel

SMS_MAX_CHARS = 1600
PUSH_MAX_BYTES = 4096
EMAIL_MAX_BYTES = 256 * 1024
METADATA_MAX_BYTES = 4096
MAX_VALIDITY_SECONDS = 14 * 24 * 3600
SEND_AT_MIN = timedelta(seconds=60)
SEND_AT_MAX = timedelta(days=35)

_TOKEN = re.compile(r"^[A-Za-z0-9_:\-.]{8,4096}$")
_ALPHA_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")


class SendRequest(BaseModel):
    """A request to send one message."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    channel: str = Field(description="sms, email or push")
    to: str = Field(description="E.164 number, email address or device token", max_length=4096)
    from_: str | None = Field(default=None, alias="from", max_length=320,
                              description="sender; omitted: one from the account's sender pool")
    body: str | None = Field(default=None, max_length=2 * EMAIL_MAX_BYTES)
    subject: str | None = Field(default=None, max_length=998)
    title: str | None = Field(default=None, max_length=PUSH_MAX_BYTES)
    data: dict[str, str] | None = None
    platform: Literal["fcm", "apns"] | None = None
    callback_url: str | None = Field(default=None, max_length=2048)
    metadata: dict[str, Any] | None = None
    validity_period: int | None = Field(default=None, ge=1, le=MAX_VALIDITY_SECONDS)
    send_at: str | None = Field(default=None, max_length=64)
    account_id: str | None = Field(default=None, max_length=64, description="AMQP ingest only")


def parse(payload: Any) -> SendRequest:
    """Validate and normalise one request; raises ValidationError."""
    if not isinstance(payload, dict):
        raise ValidationError("invalid_request", "a message must be a JSON object")
    channel = payload.get("channel")
    if channel is None:
        raise ValidationError("invalid_request", "channel is required", "channel")
    if channel not in ("sms", "email", "push"):
        raise ValidationError("unknown_channel", f"channel must be sms, email or push, got {str(channel)[:40]!r}",
                              "channel")
    try:
        request = SendRequest.model_validate(payload)
    except PydanticError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or None
        if field == "from_":
            field = "from"
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        raise ValidationError("invalid_request", f"{field}: {message}", field) from None
    to = _normalise_to(Channel(channel), request.to, request.platform)
    sender = _normalise_sender(Channel(channel), request.from_)
    _check_content(Channel(channel), request)
    if request.metadata is not None and len(orjson.dumps(request.metadata)) > METADATA_MAX_BYTES:
        raise ValidationError("metadata_too_large", f"metadata must be at most {METADATA_MAX_BYTES} bytes as JSON",
                              "metadata")
    send_at = _check_send_at(request.send_at) if request.send_at is not None else None
    return request.model_copy(update={"to": to, "from_": sender, "send_at": send_at})


def _normalise_to(channel: Channel, to: str, platform: str | None) -> str:
    to = to.strip()
    if channel == Channel.SMS:
        return normalise_phone(to, "to")
    if channel == Channel.EMAIL:
        return normalise_email(to, "to", "invalid_email")
    if not _TOKEN.match(to) or (platform == "apns" and not re.fullmatch(r"[0-9a-fA-F]{64}", to)):
        raise ValidationError("invalid_device_token", "to must be a device token", "to")
    return to


def normalise_phone(value: str, field: str, code: str = "invalid_phone_number") -> str:
    if not value.startswith("+"):
        raise ValidationError(code, f"{field} must be an E.164 number such as +447911123456", field)
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValidationError(code, f"{field} is not a phone number", field) from None
    if not phonenumbers.is_valid_number(number):
        raise ValidationError(code, f"{field} is not a valid phone number", field)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(value: str, field: str, code: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValidationError(code, f"{field} must not contain line breaks", field)
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValidationError(code, f"{field}: {exc}", field) from None


def _normalise_sender(channel: Channel, sender: str | None) -> str | None:
    if sender is None:
        return None
    sender = sender.strip()
    if channel == Channel.SMS:
        if sender.startswith("+"):
            return normalise_phone(sender, "from", "invalid_sender")
        if not _ALPHA_SENDER.match(sender) and not sender.isdigit():
            raise ValidationError("invalid_sender", "from must be an E.164 number, a short code or an "
                                  "alphanumeric id of at most 11 characters", "from")
        return sender
    if channel == Channel.EMAIL:
        return normalise_email(sender, "from", "invalid_sender")
    return sender


def _check_content(channel: Channel, request: SendRequest) -> None:
    if channel == Channel.SMS:
        if not request.body:
            raise ValidationError("invalid_request", "body is required for sms", "body")
        if len(request.body) > SMS_MAX_CHARS:
            raise ValidationError("body_too_long", f"sms body must be at most {SMS_MAX_CHARS} characters", "body")
    elif channel == Channel.EMAIL:
        if not request.body and not request.subject:
            raise ValidationError("invalid_request", "email needs a subject or a body", "body")
        if request.subject and ("\r" in request.subject or "\n" in request.subject):
            raise ValidationError("invalid_request", "subject must not contain line breaks", "subject")
        size = len((request.body or "").encode("utf-8", "surrogatepass")) + len((request.subject or "").encode(
            "utf-8", "surrogatepass"))
        if size > EMAIL_MAX_BYTES:
            raise ValidationError("body_too_long", f"email must be at most {EMAIL_MAX_BYTES} bytes", "body")
    else:
        if not request.body and not request.title:
            raise ValidationError("invalid_request", "push needs a title or a body", "body")
        payload = orjson.dumps({"title": request.title, "body": request.body, "data": request.data})
        if len(payload) > PUSH_MAX_BYTES:
            raise ValidationError("body_too_long", f"push payload must be at most {PUSH_MAX_BYTES} bytes", "body")


def _check_send_at(text: str) -> str:
    try:
        moment = clock.parse_time(text)
    except ValueError:
        raise ValidationError("invalid_send_at", "send_at must be an RFC 3339 time", "send_at") from None
    ahead = moment - clock.now()
    if ahead < SEND_AT_MIN - timedelta(seconds=5) or ahead > SEND_AT_MAX:
        raise ValidationError("invalid_send_at", "send_at must be between 60 seconds and 35 days ahead", "send_at")
    return clock.format_time(moment)
