"""The status worker: the one place where a message's status changes.

It takes proposed transitions (from route and dispatch workers) and raw carrier receipts,
applies the lifecycle (router.lifecycle) against the stored state in batches, writes
status history and usage records in one transaction per batch, then publishes the public
`status.*` and `usage.*` events and queues customer callbacks — and only then acks.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from datetime import timedelta
from functools import partial

import aiohttp
import orjson

from carriers.base import Receipt
from router import clock, codec, ids, topology
from router.lifecycle import can_move, is_terminal
from router.messages import UNIT_NAMES, Channel, Status, Transition
from router.settings import Settings
from workers import amqp, metrics
from workers.adapters import open_adapters
from workers import inbound as inbound_messages
from workers.callbacks import CallbackSender
from workers.gateway.webhooks import decode_inbound
from workers.health_feed import HealthFeed
from workers.runtime import message_age_seconds
from workers.store import open_store, parts, suppressions
from workers.store.store import history_seq
from workers.retention import sweep_loop

log = logging.getLogger("msgroute.status")
RECEIPT_TRIES_HEADER = "x-msgroute-receipt-tries"
KIND_HEADER = "x-msgroute-kind"  # on the receipts queue: unset for a carrier's webhook call, else one of these
RECEIPT_TIMEOUT_KIND = "receipt-timeout"
RECEIPT_RETRY_KIND = "receipt-retry"  # the receipts of a webhook call that were not known yet, as parsed
MAX_RECEIPT_TRIES = 5  # an unknown carrier id is retried this often (the `sent` may be in flight)
FINAL_RECEIPT = {Status.DELIVERED, Status.UNDELIVERED, Status.FAILED}


def _suppression(receipt) -> dict:
    """Email bounces and complaints put the address on the account's suppression list."""
    event = receipt.extra.get("event")
    reason = {"bounce": "bounce", "dropped": "bounce", "spamreport": "complaint"}.get(event)
    return {"suppress": reason, "address": receipt.address} if reason else {}


async def receipt_timeout_loop(worker: "StatusWorker", stop: asyncio.Event) -> None:
    """A `sent` message with no receipt within its carrier's `receipt_timeout` becomes
    `undelivered` (receipt_timeout); a receipt arriving later goes to `late_receipts`.

    The timeout is not applied here but queued behind the receipts: a receipt the gateway took
    before the timeout fired — still in the queue under load or after a broker outage — is
    applied first and wins."""
    carriers = [c for c in worker.settings.carriers if c.receipts and c.receipt_timeout]
    if not carriers:
        return
    every = max(0.5, min(c.receipt_timeout for c in carriers) / 4)
    queued: dict[str, float] = {}  # message id -> when its timeout was queued (not queued twice)
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        now = time.monotonic()
        for message_id in [m for m, at in queued.items() if now - at > 60]:
            del queued[message_id]
        for carrier in carriers:
            cutoff = clock.format_time(clock.now() - timedelta(seconds=carrier.receipt_timeout))
            try:
                stale = [m for m in await worker.store.sent_before(carrier.name, cutoff) if m not in queued]
                if stale:
                    body = orjson.dumps({"carrier": carrier.name, "timeout": carrier.receipt_timeout,
                                         "message_ids": stale})
                    await worker.publisher.publish("", topology.RECEIPTS_QUEUE, body,
                                                   headers={KIND_HEADER: RECEIPT_TIMEOUT_KIND})
                    queued.update((m, now) for m in stale)
            except Exception:  # noqa: BLE001 — the next round tries again
                log.exception("receipt timeout sweep failed", extra={"carrier": carrier.name})


def _retry_body(carrier: str, receipts: list[Receipt], received_at: str) -> bytes:
    """Only the unknown receipts go round again: a batch's known ones are applied (and counted) once."""
    return orjson.dumps({"carrier": carrier, "received_at": received_at,
                         "receipts": [dataclasses.asdict(r) for r in receipts]}, default=str)


def _decode_retry(body: bytes) -> tuple[str, list[Receipt], str]:
    data = orjson.loads(body)
    receipts = [Receipt(**{**r, "status": Status(r["status"])}) for r in data["receipts"]]
    return data["carrier"], receipts, data["received_at"]


def _timeouts(messages) -> list[Transition]:
    transitions = []
    for message in messages:
        job = orjson.loads(message.body)
        transitions += [Transition(
            message_id=message_id, status=Status.UNDELIVERED, occurred_at=clock.now_iso(), carrier=job["carrier"],
            error_code="receipt_timeout", error_message=f"no receipt within {job['timeout']:g} s")
            for message_id in job["message_ids"]]
    return transitions


def status_event(state: dict, t: Transition, previous: str) -> dict:
    error = {"code": t.error_code, "message": t.error_message} if t.error_code else None
    return {
        "type": "message.status", "message_id": t.message_id, "account_id": state["account_id"],
        "channel": state["channel"], "status": str(t.status), "previous_status": previous,
        "carrier": state.get("carrier"), "region": state.get("region"),
        "carrier_message_id": state.get("carrier_message_id"), "error": error, "attempt": state.get("attempt", 0),
        "occurred_at": t.occurred_at,
        "metadata": orjson.loads(state["metadata"]) if state.get("metadata") else None,
    }


def usage_event(record: dict) -> dict:
    fields = ("usage_id", "message_id", "account_id", "channel", "carrier", "region", "destination", "units",
              "unit", "cost", "price", "currency", "carrier_message_id", "status", "recorded_at")
    return {"type": "usage.record", **{f: record[f] for f in fields}}


class StatusWorker:
    def __init__(self, settings: Settings, store, publisher: amqp.Publisher, adapters: dict, health: HealthFeed):
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.adapters = adapters
        self.health = health
        self.receipts_expected = {c.name: c.receipts for c in settings.carriers}

    async def handle_transitions(self, messages) -> None:
        await self.apply([codec.decode_transition(m.body) for m in messages])

    async def handle_receipts(self, messages) -> None:
        timeouts = [m for m in messages if (m.headers or {}).get(KIND_HEADER) == RECEIPT_TIMEOUT_KIND]
        if timeouts:
            messages = [m for m in messages if m not in timeouts]
        await self._apply_receipts(messages)
        if timeouts:  # after the receipts that came before them
            await self.apply(_timeouts(timeouts))

    async def _apply_receipts(self, messages) -> None:
        transitions: list[Transition] = []
        retry: list[tuple[bytes, dict]] = []
        parsed, by_carrier = [], {}
        for message in messages:
            if (message.headers or {}).get(KIND_HEADER) == RECEIPT_RETRY_KIND:
                carrier, receipts, received_at = _decode_retry(message.body)
                if carrier not in self.adapters:
                    log.warning("receipt for a carrier no longer configured", extra={"carrier": carrier})
                    continue
                parsed.append((message, carrier, receipts, received_at))
                by_carrier.setdefault(carrier, []).extend(receipts)
                continue
            kind, carrier, inbound, received_at = decode_inbound(message.body)
            adapter = self.adapters.get(carrier)
            if adapter is None:
                log.warning("receipt for a carrier no longer configured", extra={"carrier": carrier})
                continue
            if kind == "inbound":
                message_in = adapter.parse_inbound(inbound)
                if message_in is not None:
                    await inbound_messages.handle(self.store, self.publisher, carrier,
                                                  self.settings.carrier(carrier).channel, message_in, received_at)
                continue
            receipts = adapter.parse_receipt(inbound)
            parsed.append((message, carrier, receipts, received_at))
            by_carrier.setdefault(carrier, []).extend(receipts)
        known_by_carrier, parts_by_carrier = {}, {}  # one lookup per carrier for the batch, not per receipt
        for carrier, receipts in by_carrier.items():
            carrier_ids = [r.carrier_message_id for r in receipts]
            # parts of a multipart SMS first: part 1's id is also the message's own
            part_of = await parts.find(self.store, carrier, carrier_ids)
            known = await self.store.find_by_carrier_ids(carrier, [i for i in carrier_ids if i not in part_of])
            known.update(await self._by_reference(
                carrier, [r for r in receipts if r.carrier_message_id not in known and r.carrier_message_id
                          not in part_of]))
            known.update(part_of)
            known_by_carrier[carrier], parts_by_carrier[carrier] = known, part_of
        part_receipts: list[tuple] = []  # (carrier, part id, status, error code, received at)
        for message, carrier, receipts, received_at in parsed:
            known = known_by_carrier[carrier]
            unknown = []
            for receipt in receipts:
                message_id = known.get(receipt.carrier_message_id)
                if message_id is None:
                    unknown.append(receipt)
                    continue
                metrics.receipts_total.labels(carrier, str(receipt.status)).inc()
                if receipt.status in FINAL_RECEIPT and receipt.carrier_message_id in parts_by_carrier[carrier]:
                    # one part of several: its outcome is recorded, the message's is aggregated below
                    self.health.record_receipt(carrier, receipt.status == Status.DELIVERED)
                    part_receipts.append((carrier, receipt.carrier_message_id, receipt.status, receipt.error_code,
                                          received_at))
                elif receipt.status in FINAL_RECEIPT:
                    self.health.record_receipt(carrier, receipt.status == Status.DELIVERED)
                    transitions.append(Transition(
                        message_id=message_id, status=receipt.status, occurred_at=received_at, carrier=carrier,
                        carrier_message_id=receipt.carrier_message_id, error_code=receipt.error_code,
                        error_message=receipt.error_message, source="receipt",
                        extra=_suppression(receipt)))
            if unknown:
                tries = int((message.headers or {}).get(RECEIPT_TRIES_HEADER, 0)) + 1
                if tries < MAX_RECEIPT_TRIES:
                    retry.append((_retry_body(carrier, unknown, received_at),
                                  {RECEIPT_TRIES_HEADER: tries, KIND_HEADER: RECEIPT_RETRY_KIND}))
                else:
                    metrics.unknown_receipts.labels(carrier).inc(len(unknown))
                    log.warning("receipt for an unknown carrier message id; dropped", extra={"carrier": carrier})
        transitions.extend(await self._aggregate_parts(part_receipts))
        await self.apply(transitions)
        await asyncio.gather(*(self.publisher.publish_later(
            amqp.RECEIPT_RETRY_DELAY, topology.RECEIPTS_QUEUE, body, headers=headers) for body, headers in retry))

    async def _aggregate_parts(self, part_receipts: list[tuple]) -> list[Transition]:
        """Per-part receipts of multipart SMS -> the messages' own transitions (router/parts.py)."""
        if not part_receipts:
            return []
        outcomes = await parts.record(self.store, part_receipts)
        if not outcomes:
            return []
        states = await self.store.current_states(outcomes)
        transitions = []
        for message_id, outcome in outcomes.items():
            state = states.get(message_id)
            if state is None:
                continue
            transitions.append(Transition(
                message_id=message_id, status=outcome.status, occurred_at=outcome.at, carrier=state["carrier"],
                carrier_message_id=state["carrier_message_id"], error_code=outcome.error_code or (
                    None if outcome.status == Status.DELIVERED else f"part_{outcome.status}"),
                error_message=outcome.error_message, source="receipt"))
        return transitions

    async def _by_reference(self, carrier: str, receipts) -> dict[str, str]:
        """Receipts that carry our id map to a message sent with its carrier id unknown (crash mid-send)."""
        refs = {r.extra.get("msgroute_id"): r.carrier_message_id for r in receipts if r.extra.get("msgroute_id")}
        if not refs:
            return {}
        states = await self.store.current_states(refs)
        return {carrier_id: ref for ref, carrier_id in refs.items()
                if ref in states and states[ref]["carrier"] == carrier and states[ref]["status"] == Status.SENT
                and states[ref]["carrier_message_id"] is None}

    async def apply(self, transitions: list[Transition]) -> None:
        """Decide against the stored state and write; re-decide if another status worker won a race."""
        if not transitions:
            return
        for _ in range(20):
            outputs = await self._decide_and_write(transitions)
            if outputs is not None:
                await self.publisher.publish_many(outputs)
                return
        raise RuntimeError("status updates kept conflicting with another status worker")

    async def _decide_and_write(self, transitions: list[Transition]) -> list | None:
        states = await self.store.current_states(t.message_id for t in transitions)
        existing_usage = await self.store.usage_for(
            [t.message_id for t in transitions if t.status in FINAL_RECEIPT])
        updates: dict[str, dict] = {}
        history, events, callbacks = [], [], []
        counted: list = []  # metrics and logs, made only once the batch is written
        suppress: list[tuple[str, str, str, str]] = []
        late: list[tuple[str, dict]] = []  # receipts after the receipt timeout closed the message
        part_rows: list[tuple] = []  # multipart SMS with an id per part, recorded with the send
        usage: dict[str, dict] = {}
        now = clock.now_iso()
        for t in transitions:
            state = states.get(t.message_id)
            if state is None:
                log.warning("transition for an unknown message", extra={"message_id": t.message_id})
                continue
            # even when the status does not move (a complaint after delivery)
            if t.error_code == "device_unregistered" or t.extra.get("suppress"):
                reason = t.extra.get("suppress") or "device_unregistered"
                suppress.append((state["account_id"], state["channel"], t.extra.get("address") or state["to_addr"],
                                 reason))
            expected = self.receipts_expected.get(t.carrier or state.get("carrier") or "", True)
            current = Status(state["status"])
            if not can_move(current, t.status, expected):
                if t.carrier_message_id and not state.get("carrier_message_id") and current != Status.QUEUED \
                        and t.carrier == state.get("carrier"):
                    # the carrier's id, learnt after we recorded the send without it
                    fill = updates.setdefault(t.message_id, {"id": t.message_id, "expected_status": state["status"]})
                    fill.update(carrier_message_id=t.carrier_message_id)
                    state["carrier_message_id"] = t.carrier_message_id
                elif t.source == "receipt" and state.get("error_code") == "receipt_timeout":
                    late.append((t.message_id, {"status": str(t.status), "at": t.occurred_at,
                                                "error": t.error_code}))
                continue
            update = updates.setdefault(t.message_id, {"id": t.message_id, "expected_status": state["status"]})
            update.update(status=str(t.status), updated_at=now)
            if t.status in (Status.ROUTED, Status.SENT, Status.FAILED) and t.source == "engine":
                update.update(carrier=t.carrier, region=t.region)
                state.update(carrier=t.carrier, region=t.region)
            if t.status == Status.SENT:
                update.update(carrier_message_id=t.carrier_message_id, units=t.units, cost=t.cost, price=t.price,
                              currency=t.currency, attempt=t.attempt)
                state.update(carrier_message_id=t.carrier_message_id, attempt=t.attempt, units=t.units)
                record = {
                    "usage_id": ids.usage_id(t.message_id), "message_id": t.message_id,
                    "account_id": state["account_id"], "channel": state["channel"], "carrier": t.carrier,
                    "region": t.region, "destination": t.destination or "", "units": t.units,
                    "unit": UNIT_NAMES[Channel(state["channel"])], "cost": t.cost, "price": t.price,
                    "currency": t.currency, "carrier_message_id": t.carrier_message_id,
                    "status": "sent", "recorded_at": t.occurred_at, "updated_at": now,
                }
                usage[t.message_id] = record
                counted.append(metrics.usage_records.labels(state["channel"]).inc)
                if t.extra.get("parts"):
                    part_rows += parts.rows_for(t.message_id, t.carrier, t.extra["parts"], t.occurred_at)
            elif t.status in FINAL_RECEIPT and (t.message_id in usage or t.message_id in existing_usage):
                record = dict(usage.get(t.message_id) or existing_usage[t.message_id])
                record.update(status=str(t.status), updated_at=now)
                usage[t.message_id] = record
            if t.error_code:
                update.update(error_code=t.error_code, error_message=t.error_message)
            elif t.status in (Status.SENT, Status.DELIVERED):
                update.update(error_code=None, error_message=None)
            if t.source == "engine" and t.status == Status.FAILED:
                update["attempt"] = t.attempt
                state["attempt"] = t.attempt
            history.append((t.message_id, history_seq(t.status), str(t.status), t.occurred_at, t.error_code,
                            t.error_message))
            event = status_event(state, t, str(current))
            events.append((topology.EVENTS_EXCHANGE, topology.status_key(state["channel"], t.status),
                           orjson.dumps(event), None))
            if state.get("callback_url"):
                callbacks.append(("", topology.CALLBACKS_QUEUE, orjson.dumps(
                    {"url": state["callback_url"], "account_id": state["account_id"], "event": event}), None))
            state["status"] = str(t.status)
            if t.status == Status.DELIVERED:
                age = message_age_seconds(t.message_id, time.time() * 1000)
                if age is not None:
                    counted.append(partial(metrics.accept_to_delivered.labels(state["channel"]).observe, age))
            if is_terminal(t.status, expected):
                counted.append(partial(log.info, f"message {t.status}", extra={
                    "message_id": t.message_id, "account_id": state["account_id"], "carrier": t.carrier,
                    "code": t.error_code}))
        if not await self.store.apply_changes(list(updates.values()), history, list(usage.values()), late,
                                              parts=part_rows):
            return None
        await suppressions.add(self.store, suppress)
        for count in counted:
            count()
        usage_events = [(topology.EVENTS_EXCHANGE, topology.usage_key(r["channel"]), orjson.dumps(usage_event(r)),
                         None) for r in usage.values()]
        return events + usage_events + callbacks


async def main(settings: Settings, stop: asyncio.Event) -> None:
    async with contextlib.AsyncExitStack() as stack:
        store = await open_store(settings.store.url)
        stack.push_async_callback(store.close)
        publishing = await amqp.connect(settings, "msgroute worker status (publish)")
        stack.push_async_callback(publishing.close)
        consuming = await amqp.connect(settings, "msgroute worker status")
        stack.push_async_callback(consuming.close)
        pub_channel = await amqp.open_channel(publishing)
        await amqp.declare_topology(pub_channel, settings)
        publisher = amqp.Publisher(pub_channel, settings.broker.confirm_timeout_seconds)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        adapters = await stack.enter_async_context(open_adapters(settings, http))
        health = HealthFeed(settings)
        await health.start(await amqp.open_channel(consuming, confirms=False), stop, publisher=publisher)
        worker = StatusWorker(settings, store, publisher, adapters, health)
        sender = CallbackSender(settings, store, publisher, http)
        stack.push_async_callback(sender.aclose)
        on_poison = lambda queue: metrics.dead_letters.labels(queue).inc()  # noqa: E731
        status_channel = await amqp.open_channel(consuming, prefetch=1000, confirms=False)
        receipts_channel = await amqp.open_channel(consuming, prefetch=500, confirms=False)
        callbacks_channel = await amqp.open_channel(consuming, prefetch=100, confirms=False)
        log.info("status worker started")
        await asyncio.gather(
            receipt_timeout_loop(worker, stop),
            sweep_loop(settings, store, stop),
            amqp.consume_batches(status_channel, topology.STATUS_QUEUE, worker.handle_transitions,
                                 publisher=publisher, stop=stop, max_batch=500, on_poison=on_poison),
            amqp.consume_batches(receipts_channel, topology.RECEIPTS_QUEUE, worker.handle_receipts,
                                 publisher=publisher, stop=stop, max_batch=250, on_poison=on_poison),
            amqp.consume(callbacks_channel, topology.CALLBACKS_QUEUE, sender.handle, publisher=publisher,
                         stop=stop, concurrency=100, on_poison=on_poison),
        )
        log.info("status worker stopped")
