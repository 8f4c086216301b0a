"""Times as the engine writes them: RFC 3339 UTC with milliseconds, e.g. 2026-01-02T03:04:05.678Z."""
from __future__ import annotations

from datetime import date, datetime, timezone


def now() -> datetime:
    return datetime.now(timezone.utc)


def format_time(moment: datetime) -> str:
    m = moment.astimezone(timezone.utc)  # the fields by hand: strftime costs several times as much
    return (f"{m.year}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}."
            f"{moment.microsecond // 1000:03d}Z")


def now_iso() -> str:
    return format_time(now())


def parse_time(text: str) -> datetime:
    """RFC 3339 (with offset or Z) or a plain date (midnight UTC). Raises ValueError."""
    text = text.strip()
    if len(text) == 10:
        day = date.fromisoformat(text)
        return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    if "T" not in text and " " not in text:
        raise ValueError(f"not an RFC 3339 time or a date: {text!r}")
    moment = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"time needs a UTC offset or Z: {text!r}")
    return moment.astimezone(timezone.utc)


def normalize(text: str) -> str:
    """Any accepted time string -> the engine's own format (so stored times compare as text)."""
    return format_time(parse_time(text))
