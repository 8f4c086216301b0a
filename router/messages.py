"""Values that cross a queue: Envelope, RouteDecision, Transition, and the enums.

They are frozen: a step that changes a message makes a new value with
`dataclasses.replace`, so routing state travels inside the message.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SCHEMA_VERSION = 1


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"
    PUSH = "push"


class Status(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    ROUTED = "routed"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELED = "canceled"


UNIT_NAMES = {Channel.SMS: "segment", Channel.EMAIL: "email", Channel.PUSH: "notification"}


@dataclass(frozen=True, slots=True)
class Candidate:
    carrier: str
    region: str
    score: float
    cost: str  # decimal string, per unit
    currency: str


@dataclass(frozen=True, slots=True)
class Exclusion:
    carrier: str
    region: str
    reason: str


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The ordered candidates (best first) and every excluded carrier with its reason."""

    candidates: tuple[Candidate, ...]
    excluded: tuple[Exclusion, ...] = ()
    destination: str = ""  # ISO country (sms), domain (email) or platform (push)
    rejection: str | None = None  # no_route / region_not_allowed when nothing is left


@dataclass(frozen=True, slots=True)
class Envelope:
    """One accepted message on its way through the engine."""

    id: str
    account_id: str
    channel: Channel
    to: str
    created_at: str
    sender: str | None = None
    body: str | None = None
    subject: str | None = None
    title: str | None = None
    data: dict[str, Any] | None = None
    platform: str | None = None
    metadata: dict[str, Any] | None = None
    callback_url: str | None = None
    expires_at: str | None = None  # RFC 3339; past it the message expires
    attempt: int = 0  # send attempts already made, across all carriers
    round: int = 0  # completed passes over the candidate list
    candidate: int = 0  # index into route.candidates for the next attempt
    tried: tuple[str, ...] = ()  # carriers tried in the current round
    route: RouteDecision | None = None
    sender_rate: float | None = None  # msg/s of the pool sender in `sender`, paced on its own
    v: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class Transition:
    """A status change proposed by a worker or a receipt; the status worker decides."""

    message_id: str
    status: Status
    occurred_at: str
    channel: Channel | None = None
    account_id: str | None = None
    carrier: str | None = None
    region: str | None = None
    carrier_message_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    attempt: int = 0
    units: int | None = None
    cost: str | None = None  # total carrier cost, decimal string
    price: str | None = None  # total customer price, decimal string
    currency: str | None = None
    destination: str | None = None
    source: str = "engine"  # engine | receipt
    extra: dict[str, Any] = field(default_factory=dict)
