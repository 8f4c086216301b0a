"""orjson bytes <-> the values in messages.py; the only place that decodes them."""
from __future__ import annotations

from typing import Any

import orjson

from router.messages import Candidate, Channel, Envelope, Exclusion, RouteDecision, Status, Transition


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def decode_route(data: dict | None) -> RouteDecision | None:
    if data is None:
        return None
    return RouteDecision(
        candidates=tuple(Candidate(**c) for c in data["candidates"]),
        excluded=tuple(Exclusion(**e) for e in data.get("excluded", ())),
        destination=data.get("destination", ""),
        rejection=data.get("rejection"),
    )


def decode_envelope(body: bytes) -> Envelope:
    data = orjson.loads(body)
    data["channel"] = Channel(data["channel"])
    data["tried"] = tuple(data.get("tried", ()))
    data["route"] = decode_route(data.get("route"))
    return Envelope(**data)


def decode_transition(body: bytes) -> Transition:
    data = orjson.loads(body)
    data["status"] = Status(data["status"])
    if data.get("channel") is not None:
        data["channel"] = Channel(data["channel"])
    return Transition(**data)
