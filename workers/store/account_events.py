"""Accounts in the store, beyond store.py: decisions and activity.

A decision changes the account row and adds its `account_events` entry in one transaction,
so every suspension, review request and reinstatement keeps its record (the account row
holds only the latest). `messages_between` gives the abuse rules their volume baseline."""
from __future__ import annotations

import uuid
from typing import Any

import orjson

from router import clock
from workers.store.backends import Cursor


async def record(store, account_id: str, event: dict, **fields: Any) -> dict | None:
    """Set `fields` on the account and log `event`; returns the updated account (None if unknown)."""
    fields["updated_at"] = clock.now_iso()
    assignments = ", ".join(f"{name} = ?" for name in fields)

    def _record(cur: Cursor):
        if cur.rowcount(f"UPDATE accounts SET {assignments} WHERE id = ?", [*fields.values(), account_id]) != 1:
            return None
        cur.execute("INSERT INTO account_events (id, account_id, type, at, detail) VALUES (?, ?, ?, ?, ?)",
                    (f"aev_{uuid.uuid4().hex}", account_id, event["type"], event.get("at") or fields["updated_at"],
                     orjson.dumps(event).decode()))
        return cur.fetchone("SELECT * FROM accounts WHERE id = ?", (account_id,))
    return await store.run(_record)


async def history(store, account_id: str) -> list[dict]:
    rows = await store.query("SELECT detail FROM account_events WHERE account_id = ? ORDER BY at, id", (account_id,))
    return [orjson.loads(row["detail"]) for row in rows]


async def messages_between(store, account_id: str, since: str, until: str) -> int:
    """How many messages the account sent in [since, until): the abuse rules' volume baseline."""
    rows = await store.query("SELECT COUNT(*) AS n FROM messages WHERE account_id = ? AND created_at >= ? "
                             "AND created_at < ?", (account_id, since, until))
    return int(rows[0]["n"]) if rows else 0
