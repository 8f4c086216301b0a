"""`msgroute usage export`: the usage ledger as CSV or JSON lines, streamed from the store.

Rows come out in recorded_at order with the fields of SPEC §5's usage record (money as
decimal strings). `since` is inclusive and `until` exclusive; each is RFC 3339 or a
date, and a date as `until` includes that whole day (UTC).
"""
from __future__ import annotations

import csv
import json
import sys
from datetime import timedelta
from typing import TextIO

from router.clock import format_time, parse_time
from router.errors import ValidationError
from workers.ledger import open_ledger

FIELDS = ("usage_id", "message_id", "account_id", "channel", "carrier", "region", "destination",
          "units", "unit", "cost", "price", "currency", "carrier_message_id", "status", "recorded_at")


def export_usage(store_url: str, since: str | None = None, until: str | None = None,
                 fmt: str = "csv", out: TextIO | None = None) -> int:
    """Write the records recorded in [since, until) to `out`; return how many.

    Raises ValidationError for a bad time or format, UnavailableError when the store cannot be read.
    """
    if fmt not in ("csv", "jsonl"):
        raise ValidationError("invalid_request", f"unknown format {fmt!r} (expected csv or jsonl)", "format")
    bounds = [("recorded_at >= %s", time_bound(since, "since")),
              ("recorded_at < %s", time_bound(until, "until", end=True))]
    bounds = [(clause, value) for clause, value in bounds if value is not None]
    where = " WHERE " + " AND ".join(clause for clause, _ in bounds) if bounds else ""
    sql = f"SELECT {', '.join(FIELDS)} FROM usage_records{where} ORDER BY recorded_at, usage_id"
    out = out or sys.stdout
    count = 0
    with open_ledger(store_url) as ledger:
        writer = csv.writer(out, lineterminator="\n")
        if fmt == "csv":
            writer.writerow(FIELDS)
        for row in ledger.rows(sql, [value for _, value in bounds]):
            if fmt == "csv":
                writer.writerow(row)
            else:
                out.write(json.dumps(dict(zip(FIELDS, row)), separators=(",", ":")) + "\n")
            count += 1
    return count


def time_bound(text: str | None, name: str, end: bool = False) -> str | None:
    """RFC 3339 or a date -> the engine's time format, which compares with recorded_at as text.

    A date as an end bound means the end of that day.
    """
    if text is None or not text.strip():
        return None
    try:
        moment = parse_time(text)
    except ValueError:
        raise ValidationError("invalid_request", f"--{name}: expected RFC 3339 (2024-01-31T12:00:00Z) "
                              f"or a date (2024-01-31), got {text!r}", name) from None
    if end and len(text.strip()) == 10:
        moment += timedelta(days=1)
    return format_time(moment)
