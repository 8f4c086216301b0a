"""Multipart SMS: one status from per-part receipts (pure).

A carrier that splits a long SMS may give each part its own id and its own receipt
(Vonage does). The message's status follows this rule:

- `delivered` once every part has a `delivered` receipt;
- `undelivered` or `failed` as soon as any part has that final receipt, without waiting
  for the others: the recipient can no longer get the whole text, and the sender should
  learn it now (to fall back, or to resend) rather than when the last receipt turns up,
  or at the receipt timeout if one never does. If several parts are final and not
  delivered when it is decided, the worst wins (`failed` over `undelivered`; then the
  lowest part number). A later part's receipt is kept on that part but, like any receipt
  after a final status, never moves the message again.
- otherwise (parts still without a final receipt, none failed) the message stays `sent`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from router.messages import Status

SEVERITY = {Status.DELIVERED: 0, Status.UNDELIVERED: 1, Status.FAILED: 2}


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    at: str  # when the deciding receipt arrived
    part: int | None = None  # the deciding part when the message was not delivered
    parts: int = 0
    error_code: str | None = None

    @property
    def error_message(self) -> str | None:
        if self.status == Status.DELIVERED:
            return None
        carrier = f" (carrier error {self.error_code})" if self.error_code else ""
        return f"part {self.part} of {self.parts} {self.status}{carrier}"


def aggregate(parts: Sequence[dict]) -> Outcome | None:
    """The message's outcome from its parts' rows ({"part", "parts", "status", "error_code",
    "updated_at"}), or None while it is not decided."""
    if not parts:
        return None
    total = max(p["parts"] for p in parts)
    bad = [p for p in parts if p["status"] in (Status.UNDELIVERED, Status.FAILED)]
    if bad:
        worst = min(bad, key=lambda p: (-SEVERITY[Status(p["status"])], p["part"]))
        return Outcome(Status(worst["status"]), worst["updated_at"], worst["part"], total, worst["error_code"])
    delivered = {p["part"] for p in parts if p["status"] == Status.DELIVERED}
    if len(delivered) >= total:
        return Outcome(Status.DELIVERED, max(p["updated_at"] for p in parts), parts=total)
    return None
