"""Sender pools: the numbers, alphanumeric ids and email senders an account sends from."""
from __future__ import annotations

import uuid

from router import clock


async def add(store, account_id: str, channel: str, address: str, country: str | None,
              rate_limit: float | None) -> dict:
    row = {"id": "snd_" + uuid.uuid4().hex[:20], "account_id": account_id, "channel": channel, "address": address,
           "country": country, "rate_limit": rate_limit, "created_at": clock.now_iso()}

    def _add(cur) -> dict:
        existing = cur.fetchone("SELECT * FROM senders WHERE account_id = ? AND channel = ? AND address = ?",
                                (account_id, channel, address))
        if existing:
            return existing
        cur.execute("INSERT INTO senders (id, account_id, channel, address, country, rate_limit, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", list(row.values()))
        return row
    return await store.run(_add)


async def listing(store, account_id: str, channel: str | None = None) -> list[dict]:
    if channel is None:
        return await store.run(lambda cur: cur.fetchall(
            "SELECT * FROM senders WHERE account_id = ? ORDER BY created_at, id", (account_id,)))
    return await store.run(lambda cur: cur.fetchall(
        "SELECT * FROM senders WHERE account_id = ? AND channel = ? ORDER BY created_at, id", (account_id, channel)))


async def remove(store, account_id: str, sender_id: str) -> bool:
    return await store.run(lambda cur: cur.rowcount(
        "DELETE FROM senders WHERE account_id = ? AND id = ?", (account_id, sender_id)) == 1)


async def owner_of(store, channel: str, address: str) -> str | None:
    """The account whose pool holds this address (inbound messages find their account this way)."""
    row = await store.run(lambda cur: cur.fetchone(
        "SELECT account_id FROM senders WHERE channel = ? AND address = ? ORDER BY created_at LIMIT 1",
        (channel, address)))
    return row["account_id"] if row else None
