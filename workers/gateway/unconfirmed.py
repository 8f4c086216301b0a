"""Accepted-but-unconfirmed messages: stored, published, and the broker's confirm never came.

The broker may or may not have the message (a blocked connection delivers it once the alarm
clears), so its stored row is kept — deleting it would let a message go out that nobody can
see or bill — and it is published again until a confirm arrives. A copy too many is harmless:
the lifecycle ignores repeated transitions and the dispatch log lets one copy reach the carrier.
The client was answered 503 and, retrying with the same Idempotency-Key, gets this same id.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from router import codec, topology
from router.messages import Envelope
from workers import runtime
from workers.ingest import intake
from workers.amqp import Publisher

log = logging.getLogger("msgroute.gateway")
RETRY_EVERY_SECONDS = 2.0


def route_item(envelope: Envelope) -> tuple[str, str, bytes, None]:
    return "", topology.ROUTE_QUEUE, codec.dumps(envelope), None


class Unconfirmed:
    def __init__(self, publisher: Publisher):
        self.publisher = publisher
        self.held: dict[str, Envelope] = {}

    def hold(self, envelopes: list[Envelope]) -> None:
        for envelope in envelopes:
            self.held[envelope.id] = envelope

    async def publish_once(self) -> None:
        envelopes = list(self.held.values())
        failures = await self.publisher.publish_each([route_item(e) for e in envelopes])
        for envelope, failure in zip(envelopes, failures):
            if failure is None:
                self.held.pop(envelope.id, None)
                log.info("unconfirmed message published again and confirmed", extra={"message_id": envelope.id})

    async def run(self) -> None:
        while True:
            await asyncio.sleep(RETRY_EVERY_SECONDS)
            if self.held:
                try:
                    await self.publish_once()
                except Exception:  # noqa: BLE001 — the next round tries again
                    log.exception("publishing unconfirmed messages again failed")

    @contextlib.asynccontextmanager
    async def running(self):
        async with runtime.background(self.run(), "unconfirmed-republisher"):
            yield self


async def republish_queued(store, unconfirmed: Unconfirmed, account_id: str, message_ids: list[str]) -> None:
    """A client retrying with the same Idempotency-Key may be retrying a 503 whose publish never
    reached the broker (and this gateway may have restarted since): a replay of a message still
    `queued` publishes it again (held until confirmed)."""
    states = await store.current_states(message_ids)
    queued = [m for m in message_ids if (states.get(m) or {}).get("status") == "queued"]
    rows = [await store.get_message(account_id, m) for m in queued]
    envelopes = [intake.envelope_from_row(row) for row in rows if row is not None]
    if not envelopes:
        return
    failures = await unconfirmed.publisher.publish_each([route_item(e) for e in envelopes])
    unconfirmed.hold([e for e, failure in zip(envelopes, failures) if failure is not None])
