"""Store operations for privacy: data-subject export and erasure, and content retention.

Where an address can appear: messages.to_addr and from_addr as themselves; carrier error
texts, late receipts and callback URLs inside free text; suppressions.address. Status
history holds no address (only statuses, times and error texts), usage records none (they
point at the message). An erased suppression stays in force under the pseudonym.
"""
from __future__ import annotations

import uuid

from router import clock
from workers.store.backends import Cursor

CONTENT_COLUMNS = ("body", "subject", "extra")  # what retention removes
ERASED_COLUMNS = CONTENT_COLUMNS + ("metadata",)  # what erasure removes as well
FREE_TEXT_COLUMNS = ("error_message", "late_receipts", "callback_url")  # may quote an address
HAS_CONTENT = "(body IS NOT NULL OR subject IS NOT NULL OR extra IS NOT NULL)"  # as in the partial index
BATCH = 500


def _in(values: list) -> str:
    return "(" + ", ".join("?" for _ in values) + ")"


def _lower(addresses: list[str]) -> list[str]:
    return list(dict.fromkeys(a.lower() for a in addresses))


def _subject_ids(cur: Cursor, account_id: str, addresses: list[str]) -> list[str]:
    """Addresses match without regard to case (email local parts are case-insensitive in practice)."""
    lower = _lower(addresses)
    rows = cur.fetchall(f"SELECT id FROM messages WHERE account_id = ? AND (LOWER(to_addr) IN {_in(lower)} "
                        f"OR LOWER(from_addr) IN {_in(lower)}) ORDER BY id", [account_id, *lower, *lower])
    return [row["id"] for row in rows]


async def export_subject(store, account_id: str, addresses: list[str]) -> tuple[list[dict], list[dict], list[dict]]:
    """The account's messages to or from these addresses (with status history), their usage
    records, and the account's suppressions of these addresses."""
    def _export(cur: Cursor):
        ids = _subject_ids(cur, account_id, addresses)
        messages, usage = [], []
        for start in range(0, len(ids), BATCH):
            chunk = ids[start:start + BATCH]
            rows = cur.fetchall(f"SELECT * FROM messages WHERE id IN {_in(chunk)} ORDER BY id", chunk)
            history: dict[str, list] = {}
            for h in cur.fetchall("SELECT message_id, status, at, error_code, error_message FROM status_history "
                                  f"WHERE message_id IN {_in(chunk)} ORDER BY message_id, seq", chunk):
                history.setdefault(h.pop("message_id"), []).append(h)
            for row in rows:
                row["history"] = history.get(row["id"], [])
            messages += rows
            usage += cur.fetchall(f"SELECT * FROM usage_records WHERE message_id IN {_in(chunk)} "
                                  "ORDER BY message_id", chunk)
        lower = _lower(addresses)
        suppressions = cur.fetchall("SELECT channel, address, reason, created_at FROM suppressions WHERE "
                                    f"account_id = ? AND LOWER(address) IN {_in(lower)} ORDER BY created_at",
                                    [account_id, *lower])
        return messages, usage, suppressions
    return await store.run(_export)


async def erase_subject(store, account_id: str, addresses: list[str], pseudonym: str) -> tuple[int, int]:
    """Remove the content of the account's messages to or from these addresses and replace the
    addresses with `pseudonym` everywhere. Returns the messages and suppressions changed
    (0, 0 when repeated)."""
    now = clock.now_iso()
    lower = _lower(addresses)
    quoted = list(dict.fromkeys([*addresses, *lower]))  # free text is matched as written

    def _replaced(column: str) -> str:
        expression = column
        for _ in quoted:
            expression = f"REPLACE({expression}, ?, ?)"
        return f"{column} = {expression}"

    pairs = [value for address in quoted for value in (address, pseudonym)]

    def _erase(cur: Cursor) -> int:
        ids = _subject_ids(cur, account_id, addresses)
        for start in range(0, len(ids), BATCH):
            chunk = ids[start:start + BATCH]
            cur.execute(
                f"UPDATE messages SET "
                f"to_addr = CASE WHEN LOWER(to_addr) IN {_in(lower)} THEN ? ELSE to_addr END, "
                f"from_addr = CASE WHEN LOWER(from_addr) IN {_in(lower)} THEN ? ELSE from_addr END, "
                + ", ".join(f"{c} = NULL" for c in ERASED_COLUMNS) + ", "
                + ", ".join(_replaced(c) for c in FREE_TEXT_COLUMNS)
                + f", updated_at = ? WHERE id IN {_in(chunk)}",
                [*lower, pseudonym, *lower, pseudonym, *(pairs * len(FREE_TEXT_COLUMNS)), now, *chunk])
            cur.execute(f"UPDATE status_history SET {_replaced('error_message')} "
                        f"WHERE message_id IN {_in(chunk)} AND error_message IS NOT NULL", [*pairs, *chunk])
        suppressions = _erase_suppressions(cur, account_id, lower, pseudonym)
        cur.execute("INSERT INTO erasures (id, account_id, subject, messages, at) VALUES (?, ?, ?, ?, ?)",
                    (f"era_{uuid.uuid4().hex}", account_id, pseudonym, len(ids), now))
        return len(ids), suppressions
    return await store.run(_erase)


def _erase_suppressions(cur: Cursor, account_id: str, lower: list[str], pseudonym: str) -> int:
    """Re-key the account's suppressions of the address under its pseudonym (one per channel)."""
    cur.execute(f"DELETE FROM suppressions WHERE account_id = ? AND LOWER(address) IN {_in(lower)} AND channel IN "
                "(SELECT channel FROM suppressions WHERE account_id = ? AND address = ?)",
                [account_id, *lower, account_id, pseudonym])
    return cur.rowcount(f"UPDATE suppressions SET address = ? WHERE account_id = ? AND LOWER(address) IN {_in(lower)}",
                        [pseudonym, account_id, *lower])


async def remove_expired_content(store, cutoff: str, batch: int = 1000) -> int:
    """Null the content of messages created before `cutoff` (not of scheduled ones still waiting),
    a batch per transaction. Returns the messages emptied."""
    sql = (f"UPDATE messages SET {', '.join(f'{c} = NULL' for c in CONTENT_COLUMNS)} WHERE id IN ("
           f"SELECT id FROM messages WHERE {HAS_CONTENT} AND created_at < ? AND status <> 'scheduled' "
           "AND (send_at IS NULL OR send_at < ?) LIMIT ?)")
    total = 0
    while True:
        changed = await store.run(lambda cur: cur.rowcount(sql, (cutoff, cutoff, batch)))
        total += changed
        if changed < batch:
            return total
