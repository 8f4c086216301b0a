"""The dispatch log: "attempt N of this message was handed to carrier X".

Every carrier call is preceded by a claim on (message, attempt). Only one claim can win, so a
copy of the same message — a broker redelivery after a crash, or a duplicate from an earlier
hop that was itself redelivered — never reaches the carrier a second time. A claim is
`started` until the outcome is known; `transient` means the attempt is known to have failed,
so it may be claimed again.
"""
from __future__ import annotations

from router import clock


async def mark(store, message_id: str, attempt: int, carrier: str, outcome: str = "started") -> None:
    now = clock.now_iso()

    def _mark(cur) -> None:
        cur.execute("INSERT INTO dispatch_log (message_id, attempt, carrier, outcome, at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (message_id, attempt) DO UPDATE SET outcome = excluded.outcome, at = excluded.at",
                    (message_id, attempt, carrier, outcome, now))
    await store.run(_mark)


async def claim(store, message_id: str, attempt: int, carrier: str, redelivered: bool = False) -> bool:
    """True when this worker may make the attempt: nobody has claimed it yet, or — for the broker's
    redelivery of our own copy — it is known to have failed (the failover may not have gone out).
    A fresh duplicate never re-claims a failed attempt: the copy that failed already moved on."""
    now = clock.now_iso()
    retake = "DO UPDATE SET outcome = 'started', carrier = excluded.carrier, at = excluded.at " \
             "WHERE dispatch_log.outcome = 'transient'" if redelivered else "DO NOTHING"

    def _claim(cur) -> int:
        return cur.rowcount(
            "INSERT INTO dispatch_log (message_id, attempt, carrier, outcome, at) VALUES (?, ?, ?, 'started', ?) "
            f"ON CONFLICT (message_id, attempt) {retake}", (message_id, attempt, carrier, now))
    return await store.run(_claim) == 1
