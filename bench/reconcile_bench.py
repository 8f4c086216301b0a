"""Reconciliation at scale: wall time and peak memory as the invoice grows.

For each size N it builds a SQLite ledger of N usage records (schema.sql) and an invoice
of about N lines with, per 1000 records, one of each: a record the invoice lacks, an
amount mismatch, a unit mismatch, a line billed twice, an amount within tolerance, a
record from the day before the period that the invoice bills, and a line for a message
we never sent. Each reconciliation runs in a fresh process, so its peak RSS (getrusage
ru_maxrss) and CPU time are its own; a process that only imports the code gives the floor.

    python bench/reconcile_bench.py [--sizes 250000,1000000] [--dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RATE = Decimal("0.0400")
DAY_SECONDS = 86_400


def cmid(i: int) -> str:
    return f"SM{(i * 2654435761) % 2**32:08x}{i:07d}"  # unique, not in ledger order


def recorded_at(i: int, n: int) -> str:
    if i % 1000 == 7:  # sent just before the period, billed on its first day
        return "2023-12-31T23:59:59.500Z"
    second = i * 30 * DAY_SECONDS // n  # spread over January
    day, rest = divmod(second, DAY_SECONDS)
    return f"2024-01-{day + 1:02d}T{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}.000Z"


def build(n: int, directory: Path) -> tuple[Path, Path, dict]:
    """Write the ledger and the invoice; return them and the expected (count, amount) per category."""
    ledger, invoice = directory / f"ledger-{n}.db", directory / f"invoice-{n}.csv"
    expected = {name: [0, Decimal(0)] for name in ("matched", "unknown_to_ledger", "missing_from_invoice",
                                                   "amount_mismatch", "unit_mismatch", "duplicates")}

    def count(name, amount):
        expected[name][0] += 1
        expected[name][1] += amount

    with sqlite3.connect(ledger) as db:
        db.executescript((ROOT / "workers/store/schema.sql").read_text())
        db.executemany("INSERT INTO usage_records VALUES (" + ", ".join("?" * 16) + ")", (
            (f"u{i}", f"msg_{i}", "acc_1", "sms", "bench", "uk-south", "GB", 1 + i % 2, "segment",
             str(RATE * (1 + i % 2)), str(RATE * (1 + i % 2) * 2), "USD", cmid(i), "delivered",
             recorded_at(i, n), recorded_at(i, n)) for i in range(n)))
    db.close()
    with open(invoice, "w", encoding="utf-8") as out:
        out.write("carrier_message_id,date,destination,units,amount,currency\n")
        for i in range(n):
            kind, units = i % 1000, 1 + i % 2
            amount = RATE * units
            day = "2024-01-01" if kind == 7 else recorded_at(i, n)[:10]
            if kind == 1:
                count("missing_from_invoice", amount)
                continue
            if kind == 2:
                amount += Decimal("0.0100")
                count("amount_mismatch", amount)
            elif kind == 3:
                units += 1
                amount = RATE * units
                count("unit_mismatch", amount)
            else:
                amount += Decimal("0.00005") if kind == 5 else 0
                count("matched", amount)
            out.write(f"{cmid(i)},{day},GB,{units},{amount},USD\n")
            if kind == 4:
                out.write(f"{cmid(i)},{day},GB,{units},{amount},USD\n")
                count("duplicates", amount)
            if kind == 6:
                out.write(f"X{i},{day},GB,1,{RATE},USD\n")
                count("unknown_to_ledger", RATE)
    return ledger, invoice, {name: (c, str(a)) for name, (c, a) in expected.items()}


def child(ledger: str | None, invoice: str | None) -> None:
    """Run in a fresh process: reconcile (or only import, without arguments) and print the figures."""
    from router.settings import CarrierSettings
    from workers.reconcile_job import run_reconcile

    result = {}
    if ledger:
        carrier = CarrierSettings(name="bench", channel="sms", adapter="sandbox", region="uk-south",
                                  rates={"default": str(RATE), "currency": "USD"})
        started = time.perf_counter()
        report = run_reconcile(f"sqlite:///{ledger}", carrier, invoice)
        result["seconds"] = time.perf_counter() - started
        result["summary"] = {name: [c.count, str(Decimal(c.amount).normalize())] for name, c in
                             report.categories.items()}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    result["peak_rss_mib"] = usage.ru_maxrss / 1024
    print(json.dumps(result))


def measure(*args: str) -> dict:
    command = [sys.executable, __file__, "--child", *args]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="250000,1000000")
    parser.add_argument("--dir", help="where to write the data (default: a temporary directory)")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return child(*(args.child or [None, None]))
    with tempfile.TemporaryDirectory(prefix="reconcile-bench-") as scratch:
        directory = Path(args.dir or scratch)
        directory.mkdir(parents=True, exist_ok=True)
        floor = measure()["peak_rss_mib"]
        print(f"python + imports only: peak RSS {floor:.1f} MiB")
        print(f"{'ledger rows':>12} {'invoice lines':>14} {'build s':>8} {'reconcile s':>12} "
              f"{'cpu s':>7} {'lines/s':>9} {'peak RSS MiB':>13} {'input MiB':>10}  result")
        for n in (int(size) for size in args.sizes.split(",")):
            started = time.perf_counter()
            ledger, invoice, expected = build(n, directory)
            built = time.perf_counter() - started
            lines = sum(1 for _ in open(invoice)) - 1
            figures = measure(str(ledger), str(invoice))
            expected = {name: [c, str(Decimal(a).normalize())] for name, (c, a) in expected.items()}
            verdict = "exact" if figures["summary"] == expected else f"WRONG {figures['summary']} != {expected}"
            input_mib = (os.path.getsize(ledger) + os.path.getsize(invoice)) / 2**20
            print(f"{n:>12,} {lines:>14,} {built:>8.1f} {figures['seconds']:>12.1f} "
                  f"{figures['cpu_seconds']:>7.1f} {lines / figures['seconds']:>9,.0f} {figures['peak_rss_mib']:>13.1f} {input_mib:>10.0f}  "
                  f"{verdict}")
            ledger.unlink()
            invoice.unlink()


if __name__ == "__main__":
    main()
