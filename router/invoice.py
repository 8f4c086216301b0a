"""Carrier invoice CSV -> InvoiceLine values, one at a time (SPEC §9).

Columns are named by the carrier's InvoiceFormat (default `carrier_message_id, date,
destination, units, amount, currency`; `destination` and `currency` may be absent), in
any order, with other columns ignored. A date is the configured strptime format, RFC
3339 or YYYY-MM-DD, and counts as its UTC day. The first malformed line stops the
parse with an InvoiceError naming its line number (the header is line 1; a record
with a quoted line break is numbered by its last line).
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Iterable, Iterator

from router.clock import parse_time
from router.settings import InvoiceFormat

AMOUNT_PLACES = 9  # amounts are exact to the nano-unit
MAX_AMOUNT = Decimal(2**63 - 1).scaleb(-AMOUNT_PLACES)  # what a signed 64-bit count of nano-units holds
_FIELDS = ("carrier_message_id", "date", "destination", "units", "amount", "currency")
_UNITS = re.compile(r"\d{1,9}")
_AMOUNT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")


class InvoiceError(ValueError):
    """A malformed invoice line (line 1 is the header)."""

    def __init__(self, line: int, message: str):
        self.line = line
        self.message = message
        super().__init__(f"line {line}: {message}")


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    line: int
    carrier_message_id: str
    date: str  # as written on the invoice
    day: str  # its UTC date, YYYY-MM-DD
    destination: str
    units: int
    amount: Decimal
    currency: str


def parse_invoice(text: Iterable[str], fmt: InvoiceFormat = InvoiceFormat(),
                  currency: str | None = None) -> Iterator[InvoiceLine]:
    """Yield the invoice's lines; raise InvoiceError at the first malformed one.

    `text` is an open file (newline=""); a line whose currency is not `currency` is malformed.
    """
    reader = csv.reader(text, delimiter=fmt.delimiter)
    header = [name.strip().lstrip("\ufeff") for name in _next_row(reader) or []]
    if not header:
        raise InvoiceError(1, "no header line: the invoice is empty")
    columns = []  # the index of each InvoiceFormat column, None when an optional one is absent
    for key in _FIELDS:
        name = getattr(fmt, key)
        if name not in header and key not in ("destination", "currency"):
            raise InvoiceError(1, f"no {name!r} column (the header has {', '.join(header)})")
        columns.append(header.index(name) if name in header else None)
    while (row := _next_row(reader)) is not None:
        if any(cell.strip() for cell in row):
            yield _invoice_line(reader.line_num, row, len(header), columns, fmt, currency)


def _next_row(reader) -> list[str] | None:
    try:
        return next(reader, None)
    except csv.Error as exc:
        raise InvoiceError(reader.line_num, f"not valid CSV: {exc}") from None


def _invoice_line(line: int, row: list[str], width: int, columns: list[int | None],
                  fmt: InvoiceFormat, currency: str | None) -> InvoiceLine:
    if len(row) != width:
        raise InvoiceError(line, f"expected {width} fields like the header, found {len(row)}")
    cmid, when, destination, units, amount, line_currency = (
        "" if i is None else row[i].strip() for i in columns)
    line_currency = line_currency.upper()
    if not cmid:
        raise InvoiceError(line, f"{fmt.carrier_message_id!r} is empty")
    day = _utc_day(when, fmt.date_format)
    if day is None:
        expected = f"{fmt.date_format!r}, " if fmt.date_format else ""
        raise InvoiceError(line, f"{fmt.date!r} must be {expected}RFC 3339 or YYYY-MM-DD, got {when!r}")
    if not _UNITS.fullmatch(units):
        raise InvoiceError(line, f"{fmt.units!r} must be a whole number, got {units!r}")
    value = _amount(amount)
    if value is None:
        raise InvoiceError(line, f"{fmt.amount!r} must be a decimal with at most {AMOUNT_PLACES} places, "
                                 f"got {amount!r}")
    if currency and line_currency not in ("", currency.upper()):
        raise InvoiceError(line, f"currency {line_currency!r} differs from the carrier's {currency!r}")
    return InvoiceLine(line, cmid, when, day, destination, int(units), value, line_currency or (currency or ""))


@lru_cache(maxsize=4096)  # invoices repeat their dates
def _utc_day(text: str, date_format: str | None) -> str | None:
    if date_format:
        try:
            parsed = datetime.strptime(text, date_format)
            return (parsed.astimezone(timezone.utc) if parsed.tzinfo else parsed).date().isoformat()
        except ValueError:
            pass
    try:
        return parse_time(text).date().isoformat()
    except ValueError:
        return None


def _amount(text: str) -> Decimal | None:
    if not _AMOUNT.fullmatch(text):
        return None
    value = Decimal(text)
    return value if value.as_tuple().exponent >= -AMOUNT_PLACES and abs(value) < MAX_AMOUNT else None
