"""`msgroute reconcile`: one carrier invoice against the usage ledger, and its report.

The matching is router.reconcile's; this module supplies the I/O: the invoice file, a
scratch SQLite database in a temporary directory (removed afterwards), and the ledger
rows from the store — our records of the invoice's period, plus older records that the
invoice bills (looked up by carrier message id).
"""
from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import sys
import tempfile
from contextlib import ExitStack, closing
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from router.reconcile import (CATEGORIES, DEFAULT_MAX_LINES, DEFAULT_TOLERANCE, DISCREPANCIES,
                              LEDGER_COLUMNS, InvoiceError, Progress, Reconciliation, Report, parse_invoice)
from router.settings import CarrierSettings
from workers.ledger import open_ledger

_SELECT = f"SELECT {', '.join(LEDGER_COLUMNS)} FROM usage_records WHERE carrier = %s"
PERIOD_QUERY = _SELECT + " AND recorded_at >= %s AND recorded_at < %s"
CSV_COLUMNS = ("category", "line", "first_line", "carrier_message_id", "usage_id", "message_id", "date",
               "recorded_at", "destination", "units", "amount", "ledger_units", "ledger_cost")
TABLE_LINES = 10  # lines shown per discrepancy in the table format


def main(store_url: str, carrier: CarrierSettings, invoice_path: str | os.PathLike,
         tolerance: Decimal | str = DEFAULT_TOLERANCE, fmt: str = "table",
         out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The whole command: progress on a terminal, the report on `out`.

    Returns 0 when clean, 1 on discrepancies, 2 on bad input (one line on `err`); an
    unreachable store raises UnavailableError for the caller to print.
    """
    out, err = out or sys.stdout, err or sys.stderr
    progress = _Progress(err) if err.isatty() else None
    try:
        report = run_reconcile(store_url, carrier, invoice_path, tolerance, progress)
    except InvoiceError as exc:
        print(f"msgroute: {invoice_path}: {exc}", file=err)
        return 2
    except OSError as exc:
        print(f"msgroute: cannot read {exc.filename or invoice_path}: {exc.strerror or exc}", file=err)
        return 2
    except (ValueError, ArithmeticError) as exc:  # a tolerance or invoice encoding we cannot use
        print(f"msgroute: {invoice_path}: {exc}", file=err)
        return 2
    finally:
        if progress:
            progress.clear()
    out.write(render(report, fmt))
    return exit_code(report)


def run_reconcile(store_url: str, carrier: CarrierSettings, invoice_path: str | os.PathLike,
                  tolerance: Decimal | str = DEFAULT_TOLERANCE, progress: Progress | None = None,
                  max_lines: int = DEFAULT_MAX_LINES) -> Report:
    """Raises InvoiceError (malformed line), OSError (invoice file) or UnavailableError (store)."""
    with ExitStack() as stack:
        invoice = stack.enter_context(open(invoice_path, newline="", encoding="utf-8-sig"))
        ledger = stack.enter_context(open_ledger(store_url))
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="msgroute-reconcile-")))
        db = stack.enter_context(closing(sqlite3.connect(scratch / "reconcile.db")))
        # scratch data: no journal; a 4 MiB page cache and on-disk sorts keep memory flat
        db.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; "
                         "PRAGMA temp_store = FILE; PRAGMA cache_size = -4096;")
        work = Reconciliation(db)
        work.add_invoice(parse_invoice(invoice, carrier.invoice, carrier.currency), progress)
        if work.window:
            work.add_ledger(ledger.rows(PERIOD_QUERY, (carrier.name, *work.window)), progress=progress)
            for ids in work.unresolved_ids():
                query = _SELECT + f" AND carrier_message_id IN ({', '.join(['%s'] * len(ids))})"
                work.add_ledger(ledger.rows(query, (carrier.name, *ids)), in_period=False)
        return work.report(carrier.name, carrier.currency, Decimal(tolerance), max_lines)


def exit_code(report: Report) -> int:
    """0 when the invoice and the ledger agree (within tolerance), 1 otherwise."""
    return 0 if report.clean else 1


def render(report: Report, fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2) + "\n"
    if fmt == "csv":
        return _csv(report)
    if fmt == "table":
        return _table(report)
    raise ValueError(f"unknown format {fmt!r} (expected table, json or csv)")


def _csv(report: Report) -> str:
    """The listed lines of every discrepancy, one row each (matched lines are left out)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    for name in DISCREPANCIES:
        for line in report.categories[name].lines:
            writer.writerow({"category": name, **line})
    return out.getvalue()


def _table(report: Report) -> str:
    period = f"{report.period[0]} to {report.period[1]}" if report.period else "an empty invoice"
    out = [f"Reconciliation of {report.carrier}, {period} "
           f"({report.currency}, tolerance {report.tolerance} per line)", "",
           f"{'category':<22}{'count':>12}{'amount':>18}"]
    for name in CATEGORIES:
        category = report.categories[name]
        out.append(f"{name:<22}{category.count:>12,}{category.amount:>18,}")
    out += ["", f"{'invoice amount':<34}{report.invoice_amount:>18,}",
            f"{'ledger cost':<34}{report.ledger_cost:>18,}",
            f"{'difference':<34}{report.invoice_amount - report.ledger_cost:>18,}"]
    for name in DISCREPANCIES:
        category = report.categories[name]
        if category.count:
            shown = min(TABLE_LINES, len(category.lines))
            of = f"{category.count:,}" if shown == category.count else f"first {shown} of {category.count:,}"
            out += ["", f"{name} ({of}):"]
            out += ["  " + _describe(line) for line in category.lines[:shown]]
    out += ["", "clean: the invoice matches the ledger" if report.clean
            else "discrepancies found (--format json or csv lists them)"]
    return "\n".join(out) + "\n"


def _describe(line: dict) -> str:
    if "line" not in line:  # missing_from_invoice
        return (f"{line['usage_id']} {line['carrier_message_id'] or '(no carrier id)'} "
                f"recorded {line['recorded_at']}: units {line['ledger_units']}, cost {line['ledger_cost']}")
    text = (f"line {line['line']}: {line['carrier_message_id']} {line['date']}: "
            f"units {line['units']}, amount {line['amount']}")
    if "first_line" in line:
        return text + f" (already billed on line {line['first_line']})"
    if "usage_id" in line:
        return text + f" (ledger {line['usage_id']}: units {line['ledger_units']}, cost {line['ledger_cost']})"
    return text


class _Progress:
    """`invoice: 120,000 lines read` on one terminal line, rewritten in place."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def __call__(self, stage: str, done: int) -> None:
        self.stream.write(f"\r{stage}: {done:,} {'lines' if stage == 'invoice' else 'records'} read")
        self.stream.flush()

    def clear(self) -> None:
        self.stream.write("\r\033[K")
        self.stream.flush()
