"""Multipart SMS: the message's status from its parts' receipts (router/parts.py)."""
import pytest

from router.messages import Status
from router.parts import aggregate


def parts(*statuses, codes=None):
    codes = codes or {}
    return [{"part": n, "parts": len(statuses), "status": s, "error_code": codes.get(n),
             "updated_at": f"2026-01-01T00:00:0{n}.000Z"} for n, s in enumerate(statuses, 1)]


def test_delivered_only_when_every_part_is():
    assert aggregate(parts("delivered", "delivered", "sent")) is None
    assert aggregate(parts("sent", "sent")) is None
    assert aggregate([]) is None
    outcome = aggregate(parts("delivered", "delivered", "delivered"))
    assert outcome.status == Status.DELIVERED
    assert outcome.at == "2026-01-01T00:00:03.000Z"  # when the last part's receipt came
    assert outcome.error_message is None


def test_missing_part_rows_never_count_as_delivered():
    rows = parts("delivered", "delivered", "delivered")[:2]
    assert aggregate(rows) is None  # 2 of 3 known


@pytest.mark.parametrize("statuses, expected, part", [
    (("delivered", "undelivered", "sent"), Status.UNDELIVERED, 2),  # decided without waiting for part 3
    (("sent", "failed", "sent"), Status.FAILED, 2),
    (("undelivered", "failed", "delivered"), Status.FAILED, 2),  # the worst known part wins
    (("undelivered", "delivered", "undelivered"), Status.UNDELIVERED, 1),  # then the first
])
def test_any_part_not_delivered_settles_it_with_the_worst_outcome(statuses, expected, part):
    outcome = aggregate(parts(*statuses, codes={part: "1"}))
    assert (outcome.status, outcome.part, outcome.parts, outcome.error_code) == (expected, part, 3, "1")
    assert outcome.error_message == f"part {part} of 3 {expected} (carrier error 1)"
