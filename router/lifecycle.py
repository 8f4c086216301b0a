"""The message status state machine (SPEC §6), in one place.

A proposed status is applied only if it moves the message forward; duplicates and
backward moves are ignored, so early, repeated or reordered receipts are harmless.
"""
from __future__ import annotations

from router.messages import Status

TERMINAL = frozenset({
    Status.DELIVERED, Status.UNDELIVERED, Status.FAILED, Status.REJECTED, Status.EXPIRED, Status.CANCELED,
})

_RANK = {
    Status.SCHEDULED: 0,
    Status.QUEUED: 1,
    Status.ROUTED: 2,
    Status.SENT: 3,
}


def is_terminal(status: Status, receipts_expected: bool = True) -> bool:
    return status in TERMINAL or (status == Status.SENT and not receipts_expected)


def can_move(current: Status, proposed: Status, receipts_expected: bool = True) -> bool:
    if current == proposed or is_terminal(current, receipts_expected):
        return False
    if proposed == Status.CANCELED:
        return current == Status.SCHEDULED
    if current == Status.SENT:
        # once a carrier took the message only its receipt decides the outcome
        return proposed in (Status.DELIVERED, Status.UNDELIVERED, Status.FAILED)
    if proposed in TERMINAL:
        return True
    return _RANK[proposed] > _RANK[current]
