"""Multipart SMS parts: which message a part's carrier id belongs to, and each part's outcome."""
from __future__ import annotations

from router import parts as rules
from router.messages import Status

FINAL = (str(Status.DELIVERED), str(Status.UNDELIVERED), str(Status.FAILED))
INSERT = ("INSERT INTO message_parts (carrier, carrier_message_id, message_id, part, parts, status, updated_at) "
          "VALUES (?, ?, ?, ?, ?, 'sent', ?) ON CONFLICT DO NOTHING")


def rows_for(message_id: str, carrier: str, part_ids, at: str) -> list[tuple]:
    """The rows to insert (with Store.apply_changes, in the transaction that records the send)."""
    part_ids = list(part_ids)
    return [(carrier, str(cid), message_id, n, len(part_ids), at) for n, cid in enumerate(part_ids, 1)]


async def find(store, carrier: str, carrier_ids: list[str]) -> dict[str, str]:
    """carrier part id -> message id, for the ids that are parts of a multipart message."""
    wanted = list(dict.fromkeys(carrier_ids))

    def _find(cur) -> dict[str, str]:
        found = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ", ".join("?" for _ in chunk)
            for row in cur.fetchall(f"SELECT carrier_message_id, message_id FROM message_parts WHERE carrier = ? "
                                    f"AND carrier_message_id IN ({marks})", [carrier, *chunk]):
                found[row["carrier_message_id"]] = row["message_id"]
        return found
    return await store.run(_find) if wanted else {}


async def record(store, receipts: list[tuple[str, str, str, str | None, str]]) -> dict[str, rules.Outcome]:
    """Record final part receipts (carrier, carrier part id, status, error code, received at) and
    return message id -> outcome for the messages whose status they (may) settle.

    One transaction, with the messages' rows locked first (PostgreSQL: SELECT … FOR UPDATE;
    SQLite: the transaction holds the write lock), so two status workers taking receipts for
    different parts of one message cannot both miss the other's part: the second sees the
    first's. A part keeps its first final receipt. An outcome is returned while the message is
    still `sent` (so a receipt redelivered after a crash settles it again: applying it twice
    is harmless), and once more for a message already final only when these receipts decided
    it (a late receipt after the receipt timeout is then recorded once, not per part).
    """
    if not receipts:
        return {}
    locking = getattr(store, "kind", "sqlite") == "postgresql"

    def _record(cur) -> dict[str, rules.Outcome]:
        keys = [(carrier, cid) for carrier, cid, *_ in receipts]
        owners: dict[tuple[str, str], str] = {}
        for carrier, cid in keys:
            row = cur.fetchone("SELECT message_id FROM message_parts WHERE carrier = ? AND carrier_message_id = ?",
                               (carrier, cid))
            if row:
                owners[(carrier, cid)] = row["message_id"]
        message_ids = sorted(set(owners.values()))  # one lock order for everyone: no deadlocks
        statuses = {}
        for message_id in message_ids:
            row = cur.fetchone("SELECT status FROM messages WHERE id = ?" + (" FOR UPDATE" if locking else ""),
                               (message_id,))
            statuses[message_id] = row["status"] if row else None
        before = {m: rules.aggregate(_parts(cur, m)) for m in message_ids}
        for carrier, cid, status, error_code, at in receipts:
            cur.execute("UPDATE message_parts SET status = ?, error_code = ?, updated_at = ? "
                        "WHERE carrier = ? AND carrier_message_id = ? AND status = 'sent'",
                        (str(status), error_code, at, carrier, cid))
        outcomes = {}
        for message_id in message_ids:
            after = rules.aggregate(_parts(cur, message_id))
            if after is None or statuses[message_id] is None:
                continue
            if statuses[message_id] == str(Status.SENT) or before[message_id] is None:
                outcomes[message_id] = after
        return outcomes
    return await store.run(_record)


def _parts(cur, message_id: str) -> list[dict]:
    return cur.fetchall("SELECT part, parts, status, error_code, updated_at FROM message_parts "
                        "WHERE message_id = ? ORDER BY part", (message_id,))


async def of_message(store, message_id: str) -> list[dict]:
    return await store.run(lambda cur: cur.fetchall(
        "SELECT part, parts, carrier_message_id, status, error_code, updated_at FROM message_parts "
        "WHERE message_id = ? ORDER BY part", (message_id,)))
