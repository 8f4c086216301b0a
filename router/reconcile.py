"""Carrier invoice reconciliation (SPEC §9): match the invoice to the ledger and report.

Memory stays bounded however large the invoice: its lines (router.invoice parses them
one at a time) and the ledger rows are written in chunks into a SQLite database that
the caller provides (workers.reconcile_job opens one in a temporary directory), and SQL
does the matching. This module opens nothing itself.

Every invoice line lands in exactly one category, so their counts and amounts add up
to the invoice's, checked in this order:

    duplicates         its carrier message id was billed on an earlier line
    unknown_to_ledger  no ledger record has that carrier message id
    unit_mismatch      units differ from the record's by more than the tolerance
    amount_mismatch    amount differs from the record's cost by more than the tolerance
    matched            everything else

`missing_from_invoice` holds our records of the invoice's period (its first to last
date, whole UTC days) that no line bills. A category's `amount` is what its invoice
lines bill (for missing_from_invoice, our cost). `lines` shows the first `max_lines`
(default 1000) in invoice order (missing: by recorded_at); `count` and `amount` always
cover them all. Money is exact: SQL holds it as integer nano-units, and an invoice
amount with more than nine decimals is refused as malformed.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from itertools import islice
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from router.invoice import AMOUNT_PLACES, InvoiceError, InvoiceLine, parse_invoice

__all__ = ["CATEGORIES", "DEFAULT_MAX_LINES", "DEFAULT_TOLERANCE", "DISCREPANCIES", "LEDGER_COLUMNS",
           "Category", "InvoiceError", "InvoiceLine", "Reconciliation", "Report", "parse_invoice"]

DEFAULT_TOLERANCE = Decimal("0.0001")
DEFAULT_MAX_LINES = 1000
INVOICE_CATEGORIES = ("matched", "unknown_to_ledger", "amount_mismatch", "unit_mismatch", "duplicates")
CATEGORIES = INVOICE_CATEGORIES[:2] + ("missing_from_invoice",) + INVOICE_CATEGORIES[2:]
DISCREPANCIES = CATEGORIES[1:]
# The ledger columns add_ledger expects, in this order (cost a decimal string).
LEDGER_COLUMNS = ("usage_id", "message_id", "carrier_message_id", "recorded_at", "destination", "units", "cost")

Progress = Callable[[str, int], None]  # (stage, rows so far)
_CHUNK = 2_000
_NANO = AMOUNT_PLACES
_MAX_NANOS = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Category:
    count: int
    amount: Decimal
    lines: tuple[dict, ...] = ()

    def to_dict(self) -> dict:
        return {"count": self.count, "amount": str(self.amount), "lines": list(self.lines)}


@dataclass(frozen=True, slots=True)
class Report:
    carrier: str
    currency: str
    period: tuple[str, str] | None  # first and last invoice day; None for an empty invoice
    tolerance: Decimal
    categories: Mapping[str, Category]  # every name in CATEGORIES
    invoice_amount: Decimal
    ledger_cost: Decimal  # records of the period, plus older ones the invoice bills

    @property
    def clean(self) -> bool:
        return all(self.categories[name].count == 0 for name in DISCREPANCIES)

    def to_dict(self) -> dict:
        period = {"from": self.period[0], "to": self.period[1]} if self.period else None
        out = {"carrier": self.carrier, "currency": self.currency, "period": period,
               "tolerance": str(self.tolerance)}
        out.update((name, self.categories[name].to_dict()) for name in CATEGORIES)
        out["totals"] = {"invoice_amount": str(self.invoice_amount), "ledger_cost": str(self.ledger_cost),
                         "difference": str(self.invoice_amount - self.ledger_cost)}
        return out


_SCHEMA = """
CREATE TABLE invoice (line INTEGER PRIMARY KEY, cmid TEXT NOT NULL, date TEXT, day TEXT,
                      destination TEXT, units INTEGER, amount INTEGER);
CREATE TABLE ledger (usage_id TEXT, message_id TEXT, cmid TEXT, recorded_at TEXT,
                     destination TEXT, units INTEGER, cost INTEGER, in_period INTEGER);
CREATE TABLE verdict (line INTEGER, amount INTEGER, ledger_id INTEGER, first_line INTEGER, category TEXT);
"""

# One row per invoice line: its category, the ledger row it matched, the line first billing it.
# Both sides are read through covering indexes in carrier-message-id order, so the join
# walks them front to back instead of seeking at random (which a small cache makes slow).
_CLASSIFY = """
INSERT INTO verdict
SELECT line, amount, ledger_id, first_line,
       CASE WHEN first_line < line THEN 'duplicates'
            WHEN ledger_id IS NULL THEN 'unknown_to_ledger'
            WHEN ABS(units - ledger_units) * 1000000000 > :tol THEN 'unit_mismatch'
            WHEN ABS(amount - cost) > :tol THEN 'amount_mismatch'
            ELSE 'matched' END
FROM (SELECT i.line, i.amount, i.units, l.rowid AS ledger_id, l.units AS ledger_units, l.cost,
             (SELECT MIN(line) FROM invoice AS p WHERE p.cmid = i.cmid) AS first_line
      FROM invoice AS i INDEXED BY invoice_cmid
      LEFT JOIN ledger AS l INDEXED BY ledger_cmid ON l.cmid = i.cmid
           AND l.rowid = (SELECT MIN(rowid) FROM ledger AS m WHERE m.cmid = i.cmid))
"""
_LINES = """
SELECT i.line, i.cmid, i.date, i.destination, i.units, i.amount, v.first_line, l.usage_id, l.units, l.cost
FROM verdict AS v JOIN invoice AS i ON i.line = v.line LEFT JOIN ledger AS l ON l.rowid = v.ledger_id
WHERE v.category = ? ORDER BY v.line LIMIT ?
"""
_UNBILLED = "FROM ledger WHERE in_period AND NOT EXISTS (SELECT 1 FROM verdict WHERE ledger_id = ledger.rowid)"


class Reconciliation:
    """One invoice against the ledger, worked out in the given SQLite connection.

    Call add_invoice once; read `period`; add_ledger with our records of that period;
    for each batch from unresolved_ids(), add_ledger with the records holding those ids
    (billed now, recorded earlier) and in_period=False; then report().
    """

    def __init__(self, db: sqlite3.Connection):
        self.db = db
        db.executescript(_SCHEMA)

    def add_invoice(self, lines: Iterable[InvoiceLine], progress: Progress | None = None) -> int:
        rows = ((x.line, x.carrier_message_id, x.date, x.day, x.destination, x.units, _nanos(x.amount))
                for x in lines)
        done = self._insert("INSERT INTO invoice VALUES (?, ?, ?, ?, ?, ?, ?)", rows, "invoice", progress)
        self.db.execute("CREATE INDEX invoice_cmid ON invoice (cmid, line, units, amount)")
        self.db.commit()
        return done

    @property
    def period(self) -> tuple[str, str] | None:
        first, last = self.db.execute("SELECT MIN(day), MAX(day) FROM invoice").fetchone()
        return (first, last) if first else None

    @property
    def window(self) -> tuple[str, str] | None:
        """The period as a half-open range of recorded_at: [first day, the day after the last)."""
        if not self.period:
            return None
        first, last = self.period
        return first, (date.fromisoformat(last) + timedelta(days=1)).isoformat()

    def add_ledger(self, rows: Iterable[Sequence], in_period: bool = True,
                   progress: Progress | None = None) -> int:
        """Add ledger rows, tuples in LEDGER_COLUMNS order."""
        flag = int(in_period)
        converted = ((*row[:6], _ledger_cost(row), flag) for row in rows)
        return self._insert("INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            converted, "ledger", progress)

    def unresolved_ids(self, batch: int = 500) -> Iterator[list[str]]:
        """The billed carrier message ids that no ledger row added so far holds, in batches."""
        self._index_ledger()
        self.db.execute("DROP TABLE IF EXISTS unresolved")
        self.db.execute("CREATE TABLE unresolved AS SELECT DISTINCT cmid FROM invoice AS i "
                        "WHERE NOT EXISTS (SELECT 1 FROM ledger WHERE ledger.cmid = i.cmid)")
        after = 0
        while rows := self.db.execute("SELECT rowid, cmid FROM unresolved WHERE rowid > ? "
                                      "ORDER BY rowid LIMIT ?", (after, batch)).fetchall():
            after = rows[-1][0]
            yield [cmid for _, cmid in rows]

    def report(self, carrier: str, currency: str, tolerance: Decimal = DEFAULT_TOLERANCE,
               max_lines: int = DEFAULT_MAX_LINES) -> Report:
        if tolerance < 0:
            raise ValueError(f"tolerance must not be negative, got {tolerance}")
        db = self.db
        self._index_ledger()
        db.execute("DELETE FROM verdict")
        db.execute(_CLASSIFY, {"tol": _nanos(tolerance)})
        db.execute("CREATE INDEX IF NOT EXISTS verdict_category ON verdict (category, line)")
        db.execute("CREATE INDEX IF NOT EXISTS verdict_ledger ON verdict (ledger_id)")
        sums = {name: (count, amount) for name, count, amount in
                db.execute("SELECT category, COUNT(*), SUM(amount) FROM verdict GROUP BY category")}
        categories = {}
        for name in INVOICE_CATEGORIES:
            count, amount = sums.get(name, (0, 0))
            lines = tuple(_line_dict(name, row) for row in db.execute(_LINES, (name, max_lines)))
            categories[name] = Category(count, _decimal(amount), lines)
        count, cost = db.execute(f"SELECT COUNT(*), SUM(cost) {_UNBILLED}").fetchone()
        missing = db.execute("SELECT usage_id, message_id, cmid, recorded_at, destination, units, cost "
                             f"{_UNBILLED} ORDER BY recorded_at, usage_id LIMIT ?", (max_lines,))
        categories["missing_from_invoice"] = Category(count, _decimal(cost), tuple(map(_missing_dict, missing)))
        (invoiced,) = db.execute("SELECT SUM(amount) FROM invoice").fetchone()
        (ledger_cost,) = db.execute("SELECT SUM(cost) FROM ledger").fetchone()
        db.commit()
        return Report(carrier, currency, self.period, tolerance, categories,
                      _decimal(invoiced), _decimal(ledger_cost))

    def _insert(self, sql: str, rows: Iterable, stage: str, progress: Progress | None) -> int:
        done = 0
        for chunk in _chunks(rows):
            self.db.executemany(sql, chunk)
            done += len(chunk)
            if progress:
                progress(stage, done)
        self.db.commit()
        return done

    def _index_ledger(self) -> None:
        self.db.execute("CREATE INDEX IF NOT EXISTS ledger_cmid ON ledger (cmid, units, cost)")


def _ledger_cost(row: Sequence) -> int:
    try:
        return _nanos(Decimal(row[6]))
    except (InvalidOperation, ValueError, TypeError):
        raise ValueError(f"usage record {row[0]}: cost {row[6]!r} is not a decimal "
                         f"with at most {_NANO} places") from None


def _line_dict(category: str, row: tuple) -> dict:
    line, cmid, when, destination, units, amount, first_line, usage_id, ledger_units, ledger_cost = row
    out = {"line": line, "carrier_message_id": cmid, "date": when, "destination": destination,
           "units": units, "amount": _money(amount)}
    if category == "duplicates":
        out["first_line"] = first_line
    elif category != "unknown_to_ledger":
        out.update(usage_id=usage_id, ledger_units=ledger_units, ledger_cost=_money(ledger_cost))
    return out


def _missing_dict(row: tuple) -> dict:
    usage_id, message_id, cmid, recorded_at, destination, units, cost = row
    return {"usage_id": usage_id, "message_id": message_id, "carrier_message_id": cmid,
            "recorded_at": recorded_at, "destination": destination,
            "ledger_units": units, "ledger_cost": _money(cost)}


def _nanos(value: Decimal) -> int:
    scaled = value.scaleb(_NANO)
    if scaled != scaled.to_integral_value() or abs(scaled) > _MAX_NANOS:
        raise ValueError(f"{value} is not a whole number of nano-units")
    return int(scaled)


def _decimal(nanos: int | None) -> Decimal:
    value = Decimal(nanos or 0).scaleb(-_NANO).normalize()
    return value.quantize(Decimal("0.0001")) if value.as_tuple().exponent > -4 else value


def _money(nanos: int | None) -> str | None:
    return None if nanos is None else str(_decimal(nanos))


def _chunks(rows: Iterable, size: int = _CHUNK) -> Iterator[list]:
    rows = iter(rows)
    while chunk := list(islice(rows, size)):
        yield chunk
