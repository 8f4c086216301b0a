"""Reconciliation against a real (temporary) ledger built from the store schema."""
import csv
import io
import json
import sqlite3
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from router.errors import UnavailableError, ValidationError
from router.reconcile import CATEGORIES, InvoiceError, parse_invoice
from router.settings import CarrierSettings, InvoiceFormat
from workers.reconcile_job import exit_code, main, render, run_reconcile
from workers.usage_export import FIELDS, export_usage, time_bound

SCHEMA = Path(__file__).resolve().parents[2] / "workers" / "store" / "schema.sql"
CARRIER = CarrierSettings(name="acme", channel="sms", adapter="sandbox", region="uk-south",
                          rates={"default": "0.0400", "currency": "USD"})
HEADER = "carrier_message_id,date,destination,units,amount,currency\n"

# (usage_id, carrier_message_id, recorded_at, units, cost, carrier)
RECORDS = [(f"u{n}", f"C{n}", f"2024-03-0{1 + (n - 1) // 4}T10:00:0{n % 10}.000Z", 1, "0.0400", "acme")
           for n in range(1, 11)] + [
    ("u11", "C11", "2024-03-02T12:00:00.000Z", 2, "0.0800", "acme"),   # not billed: missing
    ("u12", "C12", "2024-03-04T00:00:00.000Z", 1, "0.0400", "acme"),   # after the period
    ("u13", "C13", "2024-02-29T23:59:59.999Z", 1, "0.0400", "acme"),   # before it, but billed
    ("u14", "C99", "2024-03-02T08:00:00.000Z", 1, "0.0400", "other"),  # another carrier's
    ("u15", None, "2024-03-03T23:59:59.999Z", 1, "0.0400", "acme"),    # no carrier id: missing
    ("u16", "C16", "2024-02-28T09:00:00.000Z", 1, "0.0400", "acme"),   # before the period
]

INVOICE = HEADER + """\
C1,2024-03-01,GB,1,0.0400,USD
C2,2024-03-01T10:00:00Z,GB,1,0.04,USD
C3,2024-03-01T23:30:00-02:00,GB,1,0.0400,USD
C4,2024-03-02,GB,1,0.0400,USD
C5,2024-03-03,GB,1,0.0400,USD
C6,2024-03-03,GB,1,0.04005,USD
C7,2024-03-02,GB,1,0.0500,USD
C8,2024-03-02,GB,2,0.0800,USD
C9,2024-03-02,GB,1,0.0400,USD
C9,2024-03-02,GB,1,0.0400,USD
C10,2024-03-03,GB,1,0.0400,USD
C10,2024-03-03,GB,1,0.0400,USD
C10,2024-03-03,GB,1,0.0400,USD
X1,2024-03-02,US,1,0.0300,USD
C99,2024-03-01,GB,1,0.0400,USD
C13,2024-03-01,GB,1,0.0400,USD
"""

EXPECTED = {  # category: (count, amount)
    "matched": (9, "0.36005"),
    "unknown_to_ledger": (2, "0.0700"),
    "missing_from_invoice": (2, "0.1200"),
    "amount_mismatch": (1, "0.0500"),
    "unit_mismatch": (1, "0.0800"),
    "duplicates": (3, "0.1200"),
}


def ledger_rows():
    for usage_id, cmid, recorded_at, units, cost, carrier in RECORDS:
        yield (usage_id, "msg_" + usage_id, "acc_1", "sms", carrier, "uk-south", "GB", units, "segment",
               cost, str(Decimal(cost) * 2), "USD", cmid, "delivered", recorded_at, recorded_at)


INSERT = "INSERT INTO usage_records VALUES (" + ", ".join(["%s"] * 16) + ")"


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA.read_text())
        db.executemany(INSERT.replace("%s", "?"), ledger_rows())
    db.close()
    return f"sqlite:///{path}"  # an absolute path: sqlite:////tmp/...


def write(tmp_path, text, name="invoice.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def summary(report):
    return {name: (c.count, str(c.amount)) for name, c in report.categories.items()}


def test_each_kind_of_discrepancy(store, tmp_path):
    report = run_reconcile(store, CARRIER, write(tmp_path, INVOICE))
    assert summary(report) == EXPECTED
    assert report.period == ("2024-03-01", "2024-03-03")
    assert report.invoice_amount == Decimal("0.68005")
    assert report.ledger_cost == Decimal("0.56")  # 12 records of the period + u13, billed
    assert exit_code(report) == 1

    lines = {name: report.categories[name].lines for name in CATEGORIES}
    assert [x["line"] for x in lines["duplicates"]] == [11, 13, 14]
    assert [x["first_line"] for x in lines["duplicates"]] == [10, 12, 12]
    assert [x["carrier_message_id"] for x in lines["unknown_to_ledger"]] == ["X1", "C99"]
    assert [x["usage_id"] for x in lines["missing_from_invoice"]] == ["u11", "u15"]
    assert lines["amount_mismatch"] == ({
        "line": 8, "carrier_message_id": "C7", "date": "2024-03-02", "destination": "GB", "units": 1,
        "amount": "0.0500", "usage_id": "u7", "ledger_units": 1, "ledger_cost": "0.0400"},)
    assert lines["unit_mismatch"][0]["ledger_units"] == 1 and lines["unit_mismatch"][0]["units"] == 2


def test_generated_invoice_across_chunks_and_lookup_batches(tmp_path):
    """6000 records, a tenth of each kind; 1200 billed records predate the period (3 lookup batches)."""
    path = tmp_path / "big.db"
    rows, lines = [], [HEADER]
    for i in range(6000):
        day = 1 + i % 3
        recorded = "2024-04-30T23:00:00.000Z" if i % 5 == 0 else f"2024-05-0{day}T12:00:00.000Z"
        rows.append((f"u{i}", f"msg_{i}", "acc_1", "sms", "acme", "uk-south", "GB", 1, "segment", "0.0400",
                     "0.0800", "USD", f"G{i}", "delivered", recorded, recorded))
        kind, when = i % 10, ("2024-05-01" if i % 5 == 0 else f"2024-05-0{day}")
        if kind != 1:  # kind 1: missing from the invoice
            units, amount = {2: (1, "0.0500"), 3: (2, "0.0800")}.get(kind, (1, "0.0400"))
            lines += [f"G{i},{when},GB,{units},{amount},USD\n"] * (2 if kind == 4 else 1)
        if kind == 6:
            lines.append(f"U{i},{when},GB,1,0.0400,USD\n")
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA.read_text())
        db.executemany(INSERT.replace("%s", "?"), rows)
    db.close()
    report = run_reconcile(f"sqlite:///{path}", CARRIER, write(tmp_path, "".join(lines)))
    assert summary(report) == {
        "matched": (4200, "168.0000"), "unknown_to_ledger": (600, "24.0000"),
        "missing_from_invoice": (600, "24.0000"), "amount_mismatch": (600, "30.0000"),
        "unit_mismatch": (600, "48.0000"), "duplicates": (600, "24.0000")}
    assert report.ledger_cost == Decimal("240.0000")  # all 6000 records: in the period or billed
    # overbilled 600 * (0.01 amount + 0.04 unit + 0.04 duplicate + 0.04 unknown), less 600 * 0.04 missing
    assert report.invoice_amount - report.ledger_cost == Decimal("54.0000")


def test_tolerance_is_per_line(store, tmp_path):
    report = run_reconcile(store, CARRIER, write(tmp_path, INVOICE), tolerance="0")
    assert summary(report)["matched"] == (8, "0.3200")
    assert summary(report)["amount_mismatch"] == (2, "0.09005")


def test_clean_invoice_exits_zero(store, tmp_path):
    text = HEADER + "".join(f"C{n},2024-03-0{1 + (n - 1) // 4},GB,1,0.0400,USD\n" for n in range(1, 11))
    text += "C11,2024-03-02,GB,2,0.08,USD\n"
    report = run_reconcile(store, CARRIER, write(tmp_path, text))
    # u15 (no carrier id) stays missing; without it the invoice would be clean
    assert summary(report)["missing_from_invoice"] == (1, "0.0400")
    text += "\n"  # a trailing blank line is not malformed
    with sqlite3.connect(store.removeprefix("sqlite:///")) as db:
        db.execute("DELETE FROM usage_records WHERE usage_id = 'u15'")
    db.close()
    report = run_reconcile(store, CARRIER, write(tmp_path, text))
    assert report.clean and exit_code(report) == 0
    assert report.invoice_amount == report.ledger_cost == Decimal("0.4800")


def test_empty_invoice_is_clean(store, tmp_path):
    report = run_reconcile(store, CARRIER, write(tmp_path, HEADER))
    assert report.period is None and report.clean
    assert json.loads(render(report, "json"))["totals"] == {
        "invoice_amount": "0.0000", "ledger_cost": "0.0000", "difference": "0.0000"}


def test_lines_are_capped_but_counts_and_sums_are_exact(store, tmp_path):
    report = run_reconcile(store, CARRIER, write(tmp_path, INVOICE), max_lines=2)
    assert summary(report) == EXPECTED
    assert len(report.categories["duplicates"].lines) == 2
    assert len(report.categories["matched"].lines) == 2


def test_remapped_columns_date_format_and_delimiter(store, tmp_path):
    fmt = InvoiceFormat(carrier_message_id="MessageSid", date="Date", destination="Country",
                        units="Segments", amount="Price", currency="Currency", date_format="%d/%m/%Y",
                        delimiter=";")
    carrier = CARRIER.model_copy(update={"invoice": fmt})
    text = ("Date;MessageSid;Segments;Price;Country;Currency;Notes\n"
            "01/03/2024;C1;1;0.0400;GB;usd;first\n"
            "2024-03-01T12:00:00Z;C2;1;0.0400;GB;USD;\"quoted; with delimiter\"\n")
    report = run_reconcile(store, carrier, write(tmp_path, text))
    assert summary(report)["matched"] == (2, "0.0800")
    assert report.period == ("2024-03-01", "2024-03-01")
    # every other record of that day is missing from this invoice: u1..u4 minus the two billed
    assert summary(report)["missing_from_invoice"] == (2, "0.0800")


@pytest.mark.parametrize("text, line, words", [
    ("", 1, "empty"),
    ("carrier_message_id,date,units\nC1,2024-03-01,1\n", 1, "'amount'"),
    (HEADER + "C1,2024-03-01,GB,1,0.04,USD\nC2,2024-03-01,GB,1.5,0.04,USD\n", 3, "'units'"),
    (HEADER + "C1,2024-13-01,GB,1,0.04,USD\n", 2, "'date'"),
    (HEADER + "C1,yesterday,GB,1,0.04,USD\n", 2, "'date'"),
    (HEADER + "C1,2024-03-01,GB,1,abc,USD\n", 2, "'amount'"),
    (HEADER + "C1,2024-03-01,GB,1,0.0000000001,USD\n", 2, "at most 9 places"),
    (HEADER + "C1,2024-03-01,GB,1,0.04\n", 2, "expected 6 fields"),
    (HEADER + ",2024-03-01,GB,1,0.04,USD\n", 2, "'carrier_message_id' is empty"),
    (HEADER + "C1,2024-03-01,GB,1,0.04,EUR\n", 2, "currency 'EUR'"),
    (HEADER + "C1,2024-03-01,GB,1,0.04,USD\n\nC2,2024-03-01,GB,-1,0.04,USD\n", 4, "'units'"),
    (HEADER + 'C1,2024-03-01,"GB\nUK",1,0.04,USD\nC2,2024-03-01,GB,x,0.04,USD\n', 4, "'units'"),
])
def test_malformed_lines_are_reported_with_their_line_number(store, tmp_path, text, line, words):
    with pytest.raises(InvoiceError) as caught:
        run_reconcile(store, CARRIER, write(tmp_path, text))
    assert caught.value.line == line
    assert words in caught.value.message
    assert str(caught.value).startswith(f"line {line}: ")


def test_parse_invoice_streams():
    lines = parse_invoice(io.StringIO(HEADER + "C1,2024-03-01,GB,1,0.04,USD\nbroken\n"))
    first = next(lines)  # the good line comes out before the bad one is read
    assert (first.line, first.carrier_message_id, first.units, first.amount) == (2, "C1", 1, Decimal("0.04"))
    with pytest.raises(InvoiceError):
        next(lines)


def test_render_formats(store, tmp_path):
    report = run_reconcile(store, CARRIER, write(tmp_path, INVOICE))
    data = json.loads(render(report, "json"))
    assert {key: (data[key]["count"], data[key]["amount"]) for key in CATEGORIES} == EXPECTED
    assert data["totals"] == {"invoice_amount": "0.68005", "ledger_cost": "0.5600", "difference": "0.12005"}
    assert data["currency"] == "USD"
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert len(rows) == 2 + 2 + 1 + 1 + 3  # every discrepancy line, no matched ones
    assert {row["category"] for row in rows} == set(CATEGORIES) - {"matched"}
    table = render(report, "table")
    assert "duplicates" in table and "line 11: C9" in table and "discrepancies found" in table
    with pytest.raises(ValueError):
        render(report, "xml")


def test_main_prints_the_report_and_returns_the_exit_code(store, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert main(store, CARRIER, write(tmp_path, INVOICE), fmt="json", out=out, err=err) == 1
    assert json.loads(out.getvalue())["duplicates"]["count"] == 3
    out, err = io.StringIO(), io.StringIO()
    bad = write(tmp_path, HEADER + "C1,2024-03-01,GB,one,0.04,USD\n", "bad.csv")
    assert main(store, CARRIER, bad, out=out, err=err) == 2
    assert err.getvalue() == f"msgroute: {bad}: line 2: 'units' must be a whole number, got 'one'\n"
    assert main(store, CARRIER, tmp_path / "absent.csv", out=out, err=err) == 2
    assert "absent.csv" in err.getvalue().splitlines()[-1] and out.getvalue() == ""


def test_progress_is_reported(store, tmp_path):
    seen = []
    run_reconcile(store, CARRIER, write(tmp_path, INVOICE), progress=lambda stage, n: seen.append((stage, n)))
    assert ("invoice", 16) in seen and ("ledger", 12) in seen


def test_store_problems_are_one_clear_error(tmp_path):
    invoice = write(tmp_path, INVOICE)
    with pytest.raises(UnavailableError, match="no SQLite store"):
        run_reconcile(f"sqlite:///{tmp_path}/absent.db", CARRIER, invoice)
    with pytest.raises(UnavailableError, match="cannot reach PostgreSQL at postgresql://u:\\*\\*\\*@"):
        run_reconcile("postgresql://u:secret@127.0.0.1:1/x", CARRIER, invoice)


def test_export_usage(store):
    out = io.StringIO()
    assert export_usage(store, fmt="csv", out=out) == len(RECORDS)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == FIELDS
    assert [r["usage_id"] for r in rows[:2]] == ["u16", "u13"]  # recorded_at order
    out = io.StringIO()
    assert export_usage(store, since="2024-03-03", until="2024-03-03", fmt="jsonl", out=out) == 3
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["usage_id"] for r in records] == ["u10", "u9", "u15"]
    assert records[0] == {"usage_id": "u10", "message_id": "msg_u10", "account_id": "acc_1", "channel": "sms",
                          "carrier": "acme", "region": "uk-south", "destination": "GB", "units": 1,
                          "unit": "segment", "cost": "0.0400", "price": "0.0800", "currency": "USD",
                          "carrier_message_id": "C10", "status": "delivered",
                          "recorded_at": "2024-03-03T10:00:00.000Z"}


def test_time_bounds():
    assert time_bound("2024-03-03", "since") == "2024-03-03T00:00:00.000Z"
    assert time_bound("2024-03-03", "until", end=True) == "2024-03-04T00:00:00.000Z"
    assert time_bound("2024-03-03T01:00:00+02:00", "until", end=True) == "2024-03-02T23:00:00.000Z"
    with pytest.raises(ValidationError, match="--since"):
        time_bound("March", "since")


# PostgreSQL: the same ledger in a schema of its own, dropped afterwards.
PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_store():
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL unreachable at {PG}: {exc}")
    schema = f"msgroute_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        with psycopg.connect(f"{PG}?options=-csearch_path%3D{schema}") as conn:
            conn.execute(SCHEMA.read_text())
            with conn.cursor() as cursor:
                cursor.executemany(INSERT, list(ledger_rows()))
        yield f"{PG}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def test_postgres_ledger_gives_the_same_report(pg_store, store, tmp_path):
    invoice = write(tmp_path, INVOICE)
    report = run_reconcile(pg_store, CARRIER, invoice)
    assert summary(report) == EXPECTED
    assert report.to_dict() == run_reconcile(store, CARRIER, invoice).to_dict()
    out = io.StringIO()
    assert export_usage(pg_store, since="2024-03-01", fmt="jsonl", out=out) == len(RECORDS) - 2
