"""The carrier adapter seam.

An adapter is one class per carrier protocol. The engine builds it once per configured
carrier with `Adapter(config, http)` and then calls:

- `await send(envelope) -> SendResult`: deliver one message; raise
  `TemporaryFailure` (try again / elsewhere) or `PermanentFailure` (never through this
  carrier), mapping the carrier's own errors with `raise ... from exc`. Nothing from
  aiohttp, httpx or the carrier's client library escapes.
- `verify_receipt(request) -> bool`: check the carrier's signature on a receipt webhook.
- `parse_receipt(request) -> list[Receipt]`: the carrier's receipt format to our values.
- `await aclose()`: release connections.
- optionally `parse_inbound(request) -> InboundMessage | None` for carriers that deliver
  messages sent back to our numbers (`/webhooks/inbound/{carrier}`), verified like receipts.

`request` is an `InboundRequest`: the raw HTTP request the carrier made to
`{public_url}/webhooks/dlr/{carrier name}` (or `/webhooks/inbound/{carrier name}`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

import aiohttp

from router.errors import CarrierError, OutcomeUnknown, PermanentFailure, TemporaryFailure  # noqa: F401  (re-exported)
from router.messages import Envelope, Status


@dataclass(frozen=True, slots=True)
class CarrierConfig:
    """What an adapter is given: its carrier's name, channel and resolved settings."""

    name: str
    channel: str
    settings: dict[str, Any]
    public_url: str = "http://127.0.0.1:8080"

    @property
    def receipt_url(self) -> str:
        return f"{self.public_url.rstrip('/')}/webhooks/dlr/{self.name}"

    @property
    def inbound_url(self) -> str:
        return f"{self.public_url.rstrip('/')}/webhooks/inbound/{self.name}"


@dataclass(frozen=True, slots=True)
class SendResult:
    carrier_message_id: str
    units: int | None = None  # the carrier's own count when it reports one
    carrier_price: str | None = None  # decimal string when the carrier reports one
    # multipart SMS whose carrier gives each part its own id and receipt (Vonage): every
    # part's id in order, the first being carrier_message_id; empty otherwise
    part_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Receipt:
    """One delivery outcome reported by a carrier.

    status is DELIVERED, UNDELIVERED or FAILED for final outcomes, or SENT for
    intermediate ones (queued/sent/accepted at the carrier) which never change our status.
    """

    carrier_message_id: str
    status: Status
    error_code: str | None = None
    error_message: str | None = None
    part: int | None = None  # multipart SMS: which part this receipt is for
    parts: int | None = None
    address: str | None = None  # the recipient when the carrier reports one (bounces)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message a recipient sent back to one of our senders (adapters with `parse_inbound`)."""

    sender: str  # the recipient who wrote to us
    to: str  # our sender address it was sent to
    body: str
    carrier_message_id: str | None = None


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """An HTTP request from a carrier, as received (used for receipts and inbound)."""

    method: str
    url: str  # the full public URL the carrier called, query included
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""
    query: tuple[tuple[str, str], ...] = ()

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def form(self) -> dict[str, str]:
        """Form body (or query string for GET) as a dict; the last value of a key wins."""
        if self.method == "GET" or not self.body:
            return dict(self.query)
        return dict(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))


class CarrierAdapter(Protocol):
    config: CarrierConfig

    async def send(self, envelope: Envelope) -> SendResult: ...

    def verify_receipt(self, request: InboundRequest) -> bool: ...

    def parse_receipt(self, request: InboundRequest) -> list[Receipt]: ...

    async def aclose(self) -> None: ...


def resolve_secret(value: Any) -> Any:
    """`env:NAME` → the environment variable's value (empty string when unset)."""
    if isinstance(value, str) and value.startswith("env:"):
        return os.environ.get(value[4:], "")
    return value


def map_http_status(status: int, text: str, retry_after: str | None = None):
    """The common HTTP error mapping: 429/5xx/408 are temporary, other 4xx permanent."""
    if status == 429 or status == 408 or status >= 500:
        delay = None
        if retry_after:
            try:
                delay = float(retry_after)
            except ValueError:
                delay = None
        return TemporaryFailure("carrier_unavailable", f"HTTP {status}: {text[:200]}", delay)
    return PermanentFailure("carrier_rejected", f"HTTP {status}: {text[:200]}")


TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)
# failures that happen before any byte of the request left us: safe to send again
NOT_SENT_ERRORS = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


def transport_failure(carrier: str, exc: BaseException) -> CarrierError:
    """A transport error: retryable if the request never left, otherwise the outcome is unknown
    (a reset or timeout after the request was written may follow a carrier that took the message)."""
    message = f"{carrier}: {type(exc).__name__}: {exc}"
    if isinstance(exc, NOT_SENT_ERRORS):
        return TemporaryFailure("carrier_unavailable", message)
    return OutcomeUnknown("carrier_outcome_unknown", message)
