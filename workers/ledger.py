"""Read-only, streaming access to the usage ledger (usage_records) for reconcile and export.

Store URLs: `sqlite:///relative/path`, `sqlite:////absolute/path` (opened read-only) or
`postgresql://…` (psycopg 3; rows come through a server-side cursor). Either way rows are
fetched in batches, so a query over millions of records never sits in memory at once.
"""
from __future__ import annotations

import itertools
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import quote

import psycopg

from router.errors import UnavailableError
from workers.store.backends import mask_url

BATCH = 5000
_cursor_names = itertools.count(1)


def sqlite_path(url: str) -> Path:
    """`sqlite:///relative/path` -> relative/path; `sqlite:////absolute/path` -> /absolute/path."""
    return Path(url.removeprefix("sqlite:///"))


class Ledger:
    def __init__(self, conn, url: str):
        self.conn = conn
        self.url = url
        self.postgres = not isinstance(conn, sqlite3.Connection)

    def rows(self, sql: str, params: Sequence = ()) -> Iterator[tuple]:
        """Run a query written with %s placeholders and yield its rows, one batch at a time."""
        try:
            if self.postgres:
                with self.conn.cursor(name=f"msgroute_ledger_{next(_cursor_names)}") as cursor:
                    cursor.itersize = BATCH
                    cursor.execute(sql, params)
                    while batch := cursor.fetchmany(BATCH):
                        yield from batch
            else:
                cursor = self.conn.execute(sql.replace("%s", "?"), params)
                while batch := cursor.fetchmany(BATCH):
                    yield from batch
        except (sqlite3.Error, psycopg.Error) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnavailableError(f"cannot read the usage ledger at {mask_url(self.url)}: {first_line} "
                                   "(has `msgroute migrate` been run?)") from None


@contextmanager
def open_ledger(url: str) -> Iterator[Ledger]:
    if url.startswith("sqlite:///"):
        path = sqlite_path(url)
        if not path.is_file():
            raise UnavailableError(f"no SQLite store at {path} (from {url}): run `msgroute migrate` "
                                   "or set MSGROUTE_DATABASE_URL")
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
    elif url.startswith(("postgresql://", "postgres://")):
        conn = _connect_postgres(url)
    else:
        raise UnavailableError(f"unsupported store URL {mask_url(url)}: expected sqlite:///path "
                               "or postgresql://…")
    try:
        yield Ledger(conn, url)
    finally:
        conn.close()


def _connect_postgres(url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(url, connect_timeout=5)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnavailableError(f"cannot reach PostgreSQL at {mask_url(url)} ({reason}): start it "
                               "or set MSGROUTE_DATABASE_URL") from None

