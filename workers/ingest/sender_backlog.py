"""How much work waits for each pool sender, for admission control (SPEC §12).

A pool sender with a `rate_limit` sends at that pace in the dispatch workers; a message
for it waits behind every message already queued for it. The backlog is read from the
store: messages `queued` or `routed` (accepted, not yet at the carrier) counted per `from`
address, in one grouped query that the `messages (status, …)` index confines to the
backlog's own rows. That is the cheapest sound measure:

- it is the real backlog, across every gateway process, AMQP ingest and released
  scheduled messages, and it shrinks only as messages actually go out (a stalled
  carrier keeps it high), where an in-process counter would see one gateway's traffic
  and would have to guess the draining;
- there is no per-sender queue to ask RabbitMQ about (a busy sender's messages share the
  carrier's dispatch queue and its delay tiers);
- it costs one query per gateway every `REFRESH_SECONDS` at most, and only while messages
  with a `validity_period` go to rated pool senders; nothing otherwise.

Between two snapshots the estimate is the snapshot drained at the sender's rate for the
snapshot's age, plus the messages this gateway accepted for the sender since, so a burst
through this gateway counts at once.
"""
from __future__ import annotations

import asyncio
import time

REFRESH_SECONDS = 2.0
BACKLOG_SQL = ("SELECT from_addr, COUNT(*) AS n FROM messages WHERE status IN ('queued', 'routed') "
               "AND from_addr IS NOT NULL GROUP BY from_addr")


class SenderBacklog:
    def __init__(self, store, refresh_seconds: float = REFRESH_SECONDS, clock=time.monotonic):
        self._store = store
        self._refresh = refresh_seconds
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._taken_at: float | None = None
        self._since: dict[str, int] = {}  # accepted here since the snapshot
        self._lock = asyncio.Lock()

    async def depth(self, address: str, rate: float) -> float:
        """Messages ahead of a new one for this sender (an estimate, never below zero)."""
        await self._fresh()
        drained = rate * max(0.0, self._clock() - self._taken_at)
        return max(0.0, self._counts.get(address, 0) - drained) + self._since.get(address, 0)

    def accepted(self, address: str) -> None:
        self._since[address] = self._since.get(address, 0) + 1

    async def _fresh(self) -> None:
        if self._taken_at is not None and self._clock() - self._taken_at < self._refresh:
            return
        async with self._lock:
            if self._taken_at is not None and self._clock() - self._taken_at < self._refresh:
                return
            started = self._clock()
            since, self._since = self._since, {}
            try:
                rows = await self._store.query(BACKLOG_SQL)
            except BaseException:
                for address, n in since.items():  # keep what we counted; try again next time
                    self._since[address] = self._since.get(address, 0) + n
                raise
            self._counts = {row["from_addr"]: int(row["n"]) for row in rows}
            self._taken_at = started
