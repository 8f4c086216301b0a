"""Releases scheduled messages at their `send_at` (run inside each route worker), and
requeues stranded ones.

Each due message is claimed with a conditional update (scheduled -> queued), so with N
route workers it is released exactly once; then its envelope goes to the route queue. If
the broker does not confirm, the claim is undone and the next round tries again.

A message still `queued` long after it was stored (`requeue_stranded_after_seconds`) may
never have reached the route queue — a process killed between storing and publishing it —
so it is claimed the same way (its `updated_at` touched) and published again. If it was only
waiting in a long backlog, the copy is absorbed: routing it again is harmless, the dispatch
log lets one copy reach the carrier and the lifecycle ignores repeated transitions.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

import orjson

from router import clock, codec, topology
from workers.ingest import intake
from workers.amqp import PublishFailed
from workers.store import scheduled

log = logging.getLogger("msgroute.scheduler")
POLL_SECONDS = 1.0


async def release_due(store, publisher) -> int:
    released = 0
    for row in await scheduled.due(store, clock.now_iso()):
        if (row["to_addr"] or "").startswith("anon_"):  # its recipient was erased meanwhile: never send
            await scheduled.cancel(store, row["id"])
            continue
        if not await scheduled.release(store, row["id"]):
            continue  # canceled, or another worker released it
        envelope = intake.envelope_from_row(row)
        try:
            await publisher.publish("", topology.ROUTE_QUEUE, codec.dumps(envelope))
        except PublishFailed:
            await scheduled.unrelease(store, row["id"])
            raise
        await _announce(publisher, row)
        released += 1
        log.info("scheduled message released", extra={"message_id": row["id"], "account_id": row["account_id"]})
    return released


async def requeue_stranded(store, publisher, older_than_seconds: float) -> int:
    cutoff = clock.format_time(clock.now() - timedelta(seconds=older_than_seconds))
    requeued = 0
    for row in await scheduled.stranded(store, cutoff):
        if not await scheduled.claim_stranded(store, row["id"], row["updated_at"]):
            continue
        await publisher.publish("", topology.ROUTE_QUEUE, codec.dumps(intake.envelope_from_row(row)))
        requeued += 1
        log.warning("stranded queued message published again", extra={"message_id": row["id"],
                                                                       "account_id": row["account_id"]})
    return requeued


async def _announce(publisher, row: dict) -> None:
    """scheduled -> queued is a status change customers hear about like any other."""
    event = {"type": "message.status", "message_id": row["id"], "account_id": row["account_id"],
             "channel": row["channel"], "status": "queued", "previous_status": "scheduled", "carrier": None,
             "region": None, "carrier_message_id": None, "error": None, "attempt": 0,
             "occurred_at": clock.now_iso(), "metadata": orjson.loads(row["metadata"]) if row["metadata"] else None}
    items = [(topology.EVENTS_EXCHANGE, topology.status_key(row["channel"], "queued"), orjson.dumps(event), None)]
    if row["callback_url"]:
        items.append(("", topology.CALLBACKS_QUEUE, orjson.dumps(
            {"url": row["callback_url"], "account_id": row["account_id"], "event": event}), None))
    await publisher.publish_many(items)


async def run(store, publisher, stop: asyncio.Event, stranded_after: float = 600) -> None:
    every = max(POLL_SECONDS, stranded_after / 10)
    next_stranded_check = time.monotonic() + min(every, 10)
    while not stop.is_set():
        try:
            await release_due(store, publisher)
            if time.monotonic() >= next_stranded_check:
                next_stranded_check = time.monotonic() + every
                await requeue_stranded(store, publisher, stranded_after)
        except Exception:  # noqa: BLE001 — broker or store trouble: the next round tries again
            log.exception("releasing scheduled messages failed")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL_SECONDS)
