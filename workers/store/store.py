"""Store operations, written once over the backends in backends.py."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable

import orjson

from router import clock, ids
from router.errors import UnavailableError
from workers.store.accounts import hash_key, new_api_key, new_webhook_secret
from workers.store.backends import Cursor, mask_url, open_backend

SCHEMA = Path(__file__).with_name("schema.sql")
SCHEMA_VERSION = 1
IDEMPOTENCY_WINDOW = timedelta(hours=24)

MESSAGE_COLUMNS = (
    "id", "account_id", "channel", "to_addr", "from_addr", "body", "subject", "extra", "metadata",
    "callback_url", "status", "idempotency_key", "expires_at", "send_at", "attempt", "created_at", "updated_at",
)
_INSERT_MESSAGE = (f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) "
                   f"VALUES ({', '.join('?' for _ in MESSAGE_COLUMNS)})")
_INSERT_HISTORY = ("INSERT INTO status_history (message_id, seq, status, at, error_code, error_message) "
                   "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")

HISTORY_SEQ = {"scheduled": 0, "queued": 1, "routed": 2, "sent": 3}  # terminal statuses: 4


def history_seq(status: str) -> int:
    return HISTORY_SEQ.get(status, 4)


def _chunks(items: list, size: int = 500):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _in(values: list) -> str:
    return "(" + ", ".join("?" for _ in values) + ")"


def idempotency_cutoff() -> str:
    """Idempotency keys used before this time may be used again."""
    return clock.format_time(clock.now() - IDEMPOTENCY_WINDOW)


def insert_rows(cur: Cursor, rows: list[dict], cutoff: str | None) -> list[str | None]:
    """`Store.insert_messages` inside a transaction the caller runs (workers/store/group_commit.py);
    `cutoff` (idempotency_cutoff()) may be None when no row has an idempotency key."""
    replays: list[str | None] = []
    for row in rows:
        key = row.get("idempotency_key")
        if key is not None:
            found = cur.fetchone("SELECT id, created_at FROM messages WHERE account_id = ? AND "
                                 "idempotency_key = ?", (row["account_id"], key))
            if found is not None and found["created_at"] >= cutoff:
                replays.append(found["id"])
                continue
            if found is not None:  # an expired key may be used again
                cur.execute("UPDATE messages SET idempotency_key = NULL WHERE id = ?", (found["id"],))
        cur.execute(_INSERT_MESSAGE, [row.get(c) for c in MESSAGE_COLUMNS])
        cur.execute(_INSERT_HISTORY, (row["id"], history_seq(row["status"]), row["status"],
                                      row["created_at"], row.get("error_code"), row.get("error_message")))
        if row.get("error_code"):
            cur.execute("UPDATE messages SET error_code = ?, error_message = ? WHERE id = ?",
                        (row["error_code"], row.get("error_message"), row["id"]))
        replays.append(None)
    return replays


class _Conflict(Exception):
    """A concurrent writer changed a message between our read and our write."""


class Store:
    def __init__(self, backend):
        self._db = backend
        self.kind = backend.kind
        self.url = backend.url

    async def close(self) -> None:
        await self._db.close()

    # --- schema and health -------------------------------------------------------------

    async def migrate(self) -> int:
        text = "\n".join(line.split("--", 1)[0] for line in SCHEMA.read_text().splitlines())
        statements = [s.strip() for s in text.split(";") if s.strip()]

        def _migrate(cur: Cursor) -> int:
            for statement in statements:
                cur.execute(statement)
            row = cur.fetchone("SELECT MAX(version) AS v FROM schema_version")
            if not row or row["v"] is None:
                cur.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            return SCHEMA_VERSION
        return await self._db.run(_migrate)

    async def ping(self) -> None:
        await self._db.run(lambda cur: cur.fetchone("SELECT 1 AS one"))

    # --- accounts ----------------------------------------------------------------------

    async def create_account(self, name: str, regions: list[str] | None = None,
                             callback_url: str | None = None, amqp_user: str | None = None) -> tuple[dict, str]:
        api_key = new_api_key()
        now = clock.now_iso()
        account = {
            "id": ids.account_id(), "name": name, "api_key_hash": hash_key(api_key),
            "webhook_secret": new_webhook_secret(), "callback_url": callback_url,
            "regions": ",".join(regions) if regions else None, "amqp_user": amqp_user,
            "status": "active", "created_at": now, "updated_at": now,
        }
        columns = list(account)

        def _insert(cur: Cursor) -> None:
            cur.execute(f"INSERT INTO accounts ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
                        [account[c] for c in columns])
        await self._db.run(_insert)
        return account, api_key

    async def account_by_api_key(self, api_key: str) -> dict | None:
        digest = hash_key(api_key)
        now = clock.now_iso()

        def _find(cur: Cursor):
            row = cur.fetchone("SELECT * FROM accounts WHERE api_key_hash = ?", (digest,))
            if row is None:
                row = cur.fetchone("SELECT * FROM accounts WHERE old_key_hash = ? AND old_key_expires > ?",
                                   (digest, now))
            return row
        return await self._db.run(_find)

    async def get_account(self, account_id: str) -> dict | None:
        return await self._db.run(lambda cur: cur.fetchone("SELECT * FROM accounts WHERE id = ?", (account_id,)))

    async def account_by_amqp_user(self, user: str) -> dict | None:
        return await self._db.run(lambda cur: cur.fetchone("SELECT * FROM accounts WHERE amqp_user = ?", (user,)))

    async def list_accounts(self) -> list[dict]:
        return await self._db.run(lambda cur: cur.fetchall("SELECT * FROM accounts ORDER BY created_at"))

    async def update_account(self, account_id: str, **fields: Any) -> dict | None:
        fields["updated_at"] = clock.now_iso()
        assignments = ", ".join(f"{name} = ?" for name in fields)

        def _update(cur: Cursor):
            cur.execute(f"UPDATE accounts SET {assignments} WHERE id = ?", [*fields.values(), account_id])
            return cur.fetchone("SELECT * FROM accounts WHERE id = ?", (account_id,))
        return await self._db.run(_update)

    async def rotate_key(self, account_id: str, grace_seconds: float) -> str | None:
        """New key now; the old one keeps working for `grace_seconds` (no downtime)."""
        api_key = new_api_key()
        expires = clock.format_time(clock.now() + timedelta(seconds=grace_seconds))
        now = clock.now_iso()

        def _rotate(cur: Cursor) -> bool:
            return cur.rowcount(
                "UPDATE accounts SET old_key_hash = api_key_hash, old_key_expires = ?, api_key_hash = ?, "
                "updated_at = ? WHERE id = ?", (expires, hash_key(api_key), now, account_id)) == 1
        return api_key if await self._db.run(_rotate) else None

    # --- messages: ingest --------------------------------------------------------------

    async def insert_messages(self, rows: list[dict]) -> list[str | None]:
        """Insert new messages (status queued/scheduled/rejected, with their first history entry).

        For a row whose (account_id, idempotency_key) was used in the last 24 h, nothing is
        inserted and the first message's id is returned in its place; else None.
        """
        cutoff = idempotency_cutoff()
        return await self._db.run(lambda cur: insert_rows(cur, rows, cutoff))

    async def delete_messages(self, message_ids: list[str]) -> None:
        """Undo an insert whose publish the broker did not confirm (the client gets 503)."""
        def _delete(cur: Cursor) -> None:
            for chunk in _chunks(message_ids):
                cur.execute(f"DELETE FROM status_history WHERE message_id IN {_in(chunk)}", chunk)
                cur.execute(f"DELETE FROM messages WHERE id IN {_in(chunk)}", chunk)
        await self._db.run(_delete)

    # --- messages: reads ---------------------------------------------------------------

    async def get_message(self, account_id: str | None, message_id: str) -> dict | None:
        def _get(cur: Cursor):
            row = cur.fetchone("SELECT * FROM messages WHERE id = ?", (message_id,))
            if row is None or (account_id is not None and row["account_id"] != account_id):
                return None
            row["history"] = cur.fetchall("SELECT status, at, error_code, error_message FROM status_history "
                                          "WHERE message_id = ? ORDER BY seq", (message_id,))
            if row["channel"] == "sms" and (row["units"] or 0) > 1:
                row["parts"] = cur.fetchall("SELECT part, carrier_message_id, status, error_code, updated_at "
                                            "FROM message_parts WHERE message_id = ? ORDER BY part", (message_id,))
            return row
        return await self._db.run(_get)

    async def list_messages(self, account_id: str, *, status: str | None = None, channel: str | None = None,
                            since: str | None = None, until: str | None = None, before_id: str | None = None,
                            limit: int = 50) -> list[dict]:
        clauses, params = ["account_id = ?"], [account_id]
        for clause, value in (("status = ?", status), ("channel = ?", channel), ("created_at >= ?", since),
                              ("created_at < ?", until), ("id < ?", before_id)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        sql = f"SELECT * FROM messages WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT ?"
        return await self._db.run(lambda cur: cur.fetchall(sql, [*params, limit]))

    # --- status worker -----------------------------------------------------------------

    async def current_states(self, message_ids: Iterable[str]) -> dict[str, dict]:
        wanted = list(dict.fromkeys(message_ids))

        def _load(cur: Cursor) -> dict[str, dict]:
            found = {}
            for chunk in _chunks(wanted):
                for row in cur.fetchall(
                        "SELECT id, account_id, channel, to_addr, status, carrier, region, carrier_message_id, attempt, "
                        "error_code, "
                        f"callback_url, metadata, units FROM messages WHERE id IN {_in(chunk)}", chunk):
                    found[row["id"]] = row
            return found
        return await self._db.run(_load)

    async def find_by_carrier_ids(self, carrier: str, carrier_ids: list[str]) -> dict[str, str]:
        def _find(cur: Cursor) -> dict[str, str]:
            found = {}
            for chunk in _chunks(list(dict.fromkeys(carrier_ids))):
                for row in cur.fetchall(f"SELECT id, carrier_message_id FROM messages WHERE carrier = ? AND "
                                        f"carrier_message_id IN {_in(chunk)}", [carrier, *chunk]):
                    found[row["carrier_message_id"]] = row["id"]
            return found
        return await self._db.run(_find)

    async def apply_changes(self, updates: list[dict], history: list[tuple], usage: list[dict],
                            late_receipts: list[tuple[str, dict]] = (), parts: list[tuple] = ()) -> bool:
        """One transaction for a batch of decided transitions.

        Each update carries `expected_status`, the status its decision was based on; if
        another status worker moved the message meanwhile, nothing is written and False is
        returned, so the caller re-reads and decides again.
        """
        def _apply(cur: Cursor) -> bool:
            for update in updates:
                fields = {k: v for k, v in update.items() if k not in ("id", "expected_status")}
                assignments = ", ".join(f"{name} = ?" for name in fields)
                if cur.rowcount(f"UPDATE messages SET {assignments} WHERE id = ? AND status = ?",
                                [*fields.values(), update["id"], update["expected_status"]]) != 1:
                    raise _Conflict()
            cur.executemany(_INSERT_HISTORY, history)
            for record in usage:
                columns = list(record)
                cur.execute(
                    f"INSERT INTO usage_records ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
                    "ON CONFLICT (message_id) DO UPDATE SET status = excluded.status, "
                    "updated_at = excluded.updated_at", [record[c] for c in columns])
            if parts:  # multipart SMS with an id per part (workers/store/parts.py)
                from workers.store.parts import INSERT as insert_part
                cur.executemany(insert_part, list(parts))
            for message_id, receipt in late_receipts:
                row = cur.fetchone("SELECT late_receipts FROM messages WHERE id = ?", (message_id,))
                kept = orjson.loads(row["late_receipts"]) if row and row["late_receipts"] else []
                kept.append(receipt)
                cur.execute("UPDATE messages SET late_receipts = ? WHERE id = ?",
                            (orjson.dumps(kept).decode(), message_id))
            return True
        try:
            return await self._db.run(_apply)
        except _Conflict:
            return False

    async def sent_before(self, carrier: str, cutoff: str, limit: int = 1000) -> list[str]:
        """Messages still `sent` on this carrier since before `cutoff` (receipt timeout)."""
        rows = await self._db.run(lambda cur: cur.fetchall(
            "SELECT id FROM messages WHERE status = 'sent' AND carrier = ? AND updated_at < ? LIMIT ?",
            (carrier, cutoff, limit)))
        return [row["id"] for row in rows]

    async def usage_for(self, message_ids: list[str]) -> dict[str, dict]:
        def _load(cur: Cursor) -> dict[str, dict]:
            found = {}
            for chunk in _chunks(list(dict.fromkeys(message_ids))):
                for row in cur.fetchall(f"SELECT * FROM usage_records WHERE message_id IN {_in(chunk)}", chunk):
                    found[row["message_id"]] = row
            return found
        return await self._db.run(_load)

    async def usage_rows(self, account_id: str, since: str | None, until: str | None) -> list[dict]:
        clauses, params = ["account_id = ?"], [account_id]
        if since:
            clauses.append("recorded_at >= ?")
            params.append(since)
        if until:
            clauses.append("recorded_at < ?")
            params.append(until)
        sql = f"SELECT * FROM usage_records WHERE {' AND '.join(clauses)}"
        return await self._db.run(lambda cur: cur.fetchall(sql, params))

    async def run(self, fn):
        """Run `fn(cursor)` in one transaction (for store modules beyond this file)."""
        return await self._db.run(fn)

    def run_now(self, fn):
        """`fn(cursor)` in one transaction on the calling thread if that needs no wait (SQLite
        with its write lock free); else raises backends.Busy (workers/store/group_commit.py)."""
        return self._db.run_now(fn)

    async def query(self, sql: str, params: tuple | list = ()) -> list[dict]:
        """Read-only access for operators' tools and tests."""
        return await self._db.run(lambda cur: cur.fetchall(sql, params))


async def open_store(url: str, migrate: bool | None = None) -> Store:
    """Open the store; SQLite stores are migrated on open unless migrate=False."""
    import asyncio
    loop = asyncio.get_running_loop()
    try:
        backend = await loop.run_in_executor(None, open_backend, url)
    except UnavailableError:
        raise
    store = Store(backend)
    if migrate or (migrate is None and store.kind == "sqlite"):
        try:
            await store.migrate()
        except UnavailableError:
            await store.close()
            raise
    return store


__all__ = ["Store", "open_store", "mask_url"]
