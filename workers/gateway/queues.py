"""Queue depths and consumers of the engine's queues, polled by the gateway.

Every few seconds a passive declare of each queue reads its message and consumer counts:
the counts go to `msgroute_queue_depth{queue}` and `msgroute_queue_consumers{queue}`, and
/readyz uses the consumer counts to tell whether every work queue has a worker attached.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from aiohttp import web

from router import topology
from router.settings import Settings
from workers import amqp, metrics, runtime

log = logging.getLogger("msgroute.gateway")

POLL_SECONDS = 5.0
DECLARE_TIMEOUT_SECONDS = 2.0
FRESH_SECONDS = 2.0  # /readyz polls again when the last result is older than this


def work_queues(settings: Settings) -> list[str]:
    """The queues that some worker must consume for messages to move."""
    return [topology.ROUTE_QUEUE, topology.AMQP_INGEST_QUEUE, topology.STATUS_QUEUE, topology.RECEIPTS_QUEUE,
            topology.CALLBACKS_QUEUE, *(topology.dispatch_queue(c.name) for c in settings.carriers)]


def engine_queues(settings: Settings) -> list[str]:
    """Every durable queue the engine declares: work queues, retry tiers, rejected and dead letters."""
    return [*work_queues(settings), *(name for name, _ in amqp.retry_queues(settings)),
            topology.REJECTED_QUEUE, topology.DEAD_QUEUE]


@dataclass
class Snapshot:
    at: float  # time.monotonic() of the poll
    depths: dict[str, int]
    consumers: dict[str, int]
    error: str | None = None


@dataclass
class QueueMonitor:
    settings: Settings
    connection: object = None  # the gateway's robust connection, set when its resources start
    interval: float = POLL_SECONDS
    last: Snapshot | None = None
    _channel: object = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def names(self) -> list[str]:
        return engine_queues(self.settings)

    def depths(self) -> dict[str, int] | None:
        """Each queue's message count at the last poll; None before the first."""
        return self.last.depths if self.last is not None else None

    async def _open_channel(self):
        if self._channel is None or self._channel.is_closed:
            self._channel = await asyncio.wait_for(amqp.open_channel(self.connection, confirms=False),
                                                   DECLARE_TIMEOUT_SECONDS)
        return self._channel

    @staticmethod
    async def _passive_declare(channel, name: str):
        # straight on the underlying channel: aio_pika's robust channel answers a repeated passive
        # declare from its cache, with the counts of the first one
        underlay = await channel.get_underlay_channel()
        return await underlay.queue_declare(queue=name, passive=True)

    async def poll(self) -> Snapshot:
        """One pass over every queue; a broker that does not answer gives a snapshot with `error`."""
        async with self._lock:
            depths: dict[str, int] = {}
            consumers: dict[str, int] = {}
            error = None
            try:
                channel = await self._open_channel()
                for name in self.names:
                    try:
                        result = await asyncio.wait_for(self._passive_declare(channel, name),
                                                        DECLARE_TIMEOUT_SECONDS)
                    except amqp.PUBLISH_ERRORS as exc:
                        if not isinstance(exc, asyncio.TimeoutError) and "NOT_FOUND" in str(exc):
                            # a queue deleted under us: the broker closed the channel; carry on with a new one
                            await self._close_channel()
                            channel = await self._open_channel()
                            continue
                        raise
                    depths[name], consumers[name] = result.message_count, result.consumer_count
            except Exception as exc:  # noqa: BLE001 — any failure to answer means "not answering"
                # the robust channel comes back with the connection; a closed one is replaced next time
                error = f"{type(exc).__name__}: {exc}"[:200]
            for name, depth in depths.items():
                metrics.queue_depth.labels(name).set(depth)
                metrics.queue_consumers.labels(name).set(consumers[name])
            self.last = Snapshot(time.monotonic(), depths, consumers, error)
            return self.last

    async def fresh(self, max_age: float = FRESH_SECONDS) -> Snapshot:
        last = self.last
        if last is not None and time.monotonic() - last.at <= max_age:
            return last
        return await self.poll()

    def missing_consumers(self, snapshot: Snapshot) -> list[str]:
        return [name for name in work_queues(self.settings) if snapshot.consumers.get(name, 0) == 0]

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            try:
                snapshot = await self.poll()
                if snapshot.error:
                    log.debug("queue poll failed", extra={"error": snapshot.error})
            except Exception:  # noqa: BLE001 — monitoring must never take the gateway down
                log.exception("queue poll failed")
            await asyncio.sleep(self.interval)

    @contextlib.asynccontextmanager
    async def running(self):
        try:
            async with runtime.background(self.run(), "queue-monitor"):
                yield self
        finally:
            await self._close_channel()

    async def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*amqp.PUBLISH_ERRORS):
                await asyncio.wait_for(channel.close(), DECLARE_TIMEOUT_SECONDS)


MONITOR = web.AppKey("msgroute.queues", QueueMonitor)
