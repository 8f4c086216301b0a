"""Scheduled messages: held in the store (so they survive restarts) until their send_at."""
from __future__ import annotations

from router import clock
from workers.store.store import HISTORY_SEQ


async def due(store, now: str, limit: int = 500) -> list[dict]:
    return await store.run(lambda cur: cur.fetchall(
        "SELECT * FROM messages WHERE status = 'scheduled' AND send_at <= ? ORDER BY send_at LIMIT ?",
        (now, limit)))


async def release(store, message_id: str) -> bool:
    """scheduled -> queued, if nobody else (a cancel, another worker) got there first."""
    return await _move(store, message_id, "queued")


async def cancel(store, message_id: str) -> bool:
    return await _move(store, message_id, "canceled")


async def unrelease(store, message_id: str) -> None:
    """Undo a release whose publish the broker did not confirm: it stays scheduled."""
    def _undo(cur) -> None:
        if cur.rowcount("UPDATE messages SET status = 'scheduled' WHERE id = ? AND status = 'queued'",
                        (message_id,)) == 1:
            cur.execute("DELETE FROM status_history WHERE message_id = ? AND seq = ?",
                        (message_id, HISTORY_SEQ["queued"]))
    await store.run(_undo)


async def _move(store, message_id: str, status: str) -> bool:
    now = clock.now_iso()
    seq = HISTORY_SEQ.get(status, 4)

    def _update(cur) -> bool:
        if cur.rowcount("UPDATE messages SET status = ?, updated_at = ? WHERE id = ? AND status = 'scheduled'",
                        (status, now, message_id)) != 1:
            return False
        cur.execute("INSERT INTO status_history (message_id, seq, status, at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING", (message_id, seq, status, now))
        return True
    return await store.run(_update)


async def stranded(store, older_than: str, limit: int = 500) -> list[dict]:
    """`queued` messages untouched since `older_than`: their publish may never have happened."""
    return await store.run(lambda cur: cur.fetchall(
        "SELECT * FROM messages WHERE status = 'queued' AND updated_at < ? ORDER BY updated_at LIMIT ?",
        (older_than, limit)))


async def claim_stranded(store, message_id: str, seen_at: str) -> bool:
    """Touch it, if nobody (another route worker, the status worker) moved it meanwhile."""
    return await store.run(lambda cur: cur.rowcount(
        "UPDATE messages SET updated_at = ? WHERE id = ? AND status = 'queued' AND updated_at = ?",
        (clock.now_iso(), message_id, seen_at)) == 1)
