"""Carrier health shared by every process: each dispatch worker records its send outcomes
(and the status worker its receipts) and broadcasts them every half second on
`msgroute.events` (key health.carrier); every process applies everyone's outcomes to its
own copy, so N routers and N dispatchers see the same circuits and scores."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid

import aio_pika
import orjson

from router import health as carrier_health
from router import topology
from router.settings import Settings
from workers import metrics

log = logging.getLogger("msgroute.health")
FLUSH_SECONDS = 0.5
MAX_BACKLOG_SECONDS = 60.0  # a carrier with more than this much queued work is over capacity


class HealthFeed:
    def __init__(self, settings: Settings):
        self.policy = settings.routing
        self.settings = settings
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._health: dict[str, carrier_health.CarrierHealth] = {}
        self._outbox: list[list] = []
        self._saturated: frozenset[str] = frozenset()
        self._backlogs: dict[str, int] | None = None  # rate-limited carriers' dispatch queues, last poll
        self._tasks: list[asyncio.Task] = []

    def snapshot(self) -> dict[str, carrier_health.CarrierHealth]:
        return self._health

    def saturated(self) -> frozenset[str]:
        return self._saturated

    def backlogs(self) -> dict[str, int] | None:
        """Messages waiting in each rate-limited carrier's dispatch queue at the last poll
        (watch_capacity only); None before the first."""
        return self._backlogs

    def state(self, carrier: str) -> str:
        return carrier_health.circuit_state(self._health.get(carrier, carrier_health.HEALTHY), time.time(),
                                            self.policy)

    def record_send(self, carrier: str, ok: bool, transient: bool, latency_ms: float | None) -> None:
        self._outbox.append(["s", carrier, ok, transient, latency_ms])
        self._apply(["s", carrier, ok, transient, latency_ms], time.time())

    def record_receipt(self, carrier: str, delivered: bool) -> None:
        self._outbox.append(["r", carrier, delivered])
        self._apply(["r", carrier, delivered], time.time())

    def _apply(self, outcome: list, now: float) -> None:
        carrier = outcome[1]
        current = self._health.get(carrier, carrier_health.HEALTHY)
        if outcome[0] == "s":
            updated = carrier_health.record_send(current, outcome[2], outcome[3], outcome[4], now, self.policy)
        else:
            updated = carrier_health.record_receipt(current, outcome[2], now)
        self._health[carrier] = updated
        if updated.state != current.state:
            log.info("carrier circuit changed", extra={"carrier": carrier, "state": updated.state})
        metrics.circuit_open.labels(carrier).set(0 if updated.state == carrier_health.CLOSED else 1)

    async def start(self, channel, stop: asyncio.Event, publisher=None, watch_capacity: bool = False) -> None:
        events = await channel.get_exchange(topology.EVENTS_EXCHANGE, ensure=False)
        queue = await channel.declare_queue(
            f"{topology.HEALTH_QUEUE_PREFIX}{self.origin}", exclusive=True, auto_delete=True,
            arguments={"x-message-ttl": 10_000})
        await queue.bind(events, topology.HEALTH_KEY)
        await queue.consume(self._on_broadcast, no_ack=True)
        for carrier in self.settings.carriers:
            metrics.circuit_open.labels(carrier.name).set(0)
        if publisher is not None:
            self._tasks.append(asyncio.create_task(self._flush_loop(publisher, stop)))
        if watch_capacity:
            self._tasks.append(asyncio.create_task(self._capacity_loop(channel, stop)))
        self._tasks.append(asyncio.create_task(self._refresh_gauges(stop)))

    async def _on_broadcast(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        data = orjson.loads(message.body)
        if data.get("origin") == self.origin:
            return
        now = time.time()
        for outcome in data.get("outcomes", ()):
            self._apply(outcome, now)

    async def _flush_loop(self, publisher, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_SECONDS)
            if not self._outbox:
                continue
            batch, self._outbox = self._outbox, []
            body = orjson.dumps({"origin": self.origin, "outcomes": batch})
            try:
                await publisher.publish(topology.EVENTS_EXCHANGE, topology.HEALTH_KEY, body)
            except Exception:  # noqa: BLE001 — health is advisory; keep the outcomes for next time
                self._outbox[:0] = batch[-1000:]

    async def _capacity_loop(self, channel, stop: asyncio.Event) -> None:
        """Mark carriers whose dispatch backlog exceeds MAX_BACKLOG_SECONDS at their rate limit."""
        from workers.amqp import queue_depths
        limited = {c.name: c.rate_limit for c in self.settings.carriers if c.rate_limit}
        while not stop.is_set() and limited:
            depths = await queue_depths(channel, [topology.dispatch_queue(n) for n in limited])
            self._backlogs = depths
            self._saturated = frozenset(
                name for name, rate in limited.items()
                if depths.get(topology.dispatch_queue(name), 0) > rate * MAX_BACKLOG_SECONDS)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)

    async def _refresh_gauges(self, stop: asyncio.Event) -> None:
        """Open circuits turn half-open by the clock alone; keep the gauge honest."""
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            now = time.time()
            for carrier, h in self._health.items():
                state = carrier_health.circuit_state(h, now, self.policy)
                metrics.circuit_open.labels(carrier).set(0 if state == carrier_health.CLOSED else 1)
