"""RabbitMQ: connect, declare the topology, publish with confirms, consume with manual acks.

No aio_pika exception leaves this module except through the consume loop's handling.
"""
from __future__ import annotations

import asyncio
import random
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage

from router import topology
from router.errors import UnavailableError
from router.settings import Settings
from workers.publish_batch import batcher_for
from workers.store.backends import mask_url

log = logging.getLogger("msgroute.amqp")

QUORUM = {"x-queue-type": "quorum"}
DEAD_LETTERING = {
    "x-dead-letter-exchange": topology.DEAD_EXCHANGE,
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
    "x-delivery-limit": 20,  # a message that crashes its worker this often is poison
}
PUBLISH_ERRORS = (aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError, ConnectionError,
                  asyncio.TimeoutError, RuntimeError)


class PublishFailed(Exception):
    """The broker did not confirm a publish (down, blocked, queue full, unroutable)."""


class PublishUncertain(PublishFailed):
    """The message went out but no confirm came back in time (e.g. a blocked connection): the broker
    may still take it, so it must be treated as possibly published, never as refused."""


def start_hint(url: str) -> str:
    return (f"cannot reach RabbitMQ at {mask_url(url)}; start one (e.g. `rabbitmq-server -detached`) "
            "or set MSGROUTE_AMQP_URL")


# aiormq declares a connection dead after (heartbeat + 1) × this many seconds of silence; its
# default of 3 lets a black-holed connection linger for ~3 heartbeats. One grace period (checked
# every half heartbeat) notices it within two heartbeats, as RabbitMQ's own peers do.
aiormq.Connection.HEARTBEAT_GRACE_MULTIPLIER = 1


async def connect(settings: Settings, name: str) -> aio_pika.abc.AbstractRobustConnection:
    url = settings.broker.url
    heartbeat = settings.broker.heartbeat_seconds
    try:
        return await aio_pika.connect_robust(
            url, client_properties={"connection_name": name}, heartbeat=heartbeat,
            # a (re)connect into a black hole gives up after two heartbeats and tries again
            timeout=min(10, max(2, 2 * heartbeat)), reconnect_interval=1, fail_fast="true")
    except (OSError, aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError, asyncio.TimeoutError) as exc:
        detail = str(exc) or type(exc).__name__
        if "ACCESS_REFUSED" in detail or "NOT_ALLOWED" in detail:
            raise UnavailableError(f"RabbitMQ at {mask_url(url)} refused the login or vhost: {detail[:120]}") \
                from None
        raise UnavailableError(start_hint(url)) from None


async def declare_topology(channel: aio_pika.abc.AbstractChannel, settings: Settings) -> None:
    """Every exchange and queue the engine uses; idempotent, run by every process at start."""
    ex = aio_pika.ExchangeType
    ingest = await channel.declare_exchange(topology.INGEST_EXCHANGE, ex.TOPIC, durable=True)
    await channel.declare_exchange(topology.EVENTS_EXCHANGE, ex.TOPIC, durable=True)
    dispatch = await channel.declare_exchange(topology.DISPATCH_EXCHANGE, ex.DIRECT, durable=True)
    dead = await channel.declare_exchange(topology.DEAD_EXCHANGE, ex.FANOUT, durable=True)
    dead_queue = await channel.declare_queue(topology.DEAD_QUEUE, durable=True, arguments=QUORUM)
    await dead_queue.bind(dead)
    await channel.declare_queue(topology.REJECTED_QUEUE, durable=True, arguments=QUORUM)
    work = {**QUORUM, **DEAD_LETTERING}
    amqp_ingest = await channel.declare_queue(topology.AMQP_INGEST_QUEUE, durable=True, arguments=work)
    await amqp_ingest.bind(ingest, "send.*")
    for name in (topology.ROUTE_QUEUE, topology.STATUS_QUEUE, topology.RECEIPTS_QUEUE, topology.CALLBACKS_QUEUE):
        await channel.declare_queue(name, durable=True, arguments=work)
    for carrier in settings.carriers:
        queue = await channel.declare_queue(topology.dispatch_queue(carrier.name), durable=True, arguments=work)
        await queue.bind(dispatch, carrier.name)
    for name, ttl in retry_queues(settings):
        tier = await channel.declare_exchange(name, ex.FANOUT, durable=True)
        # expired messages go back through the default exchange under their own routing key,
        # which the publisher set to the work queue's name
        queue = await channel.declare_queue(name, durable=True, arguments={
            **QUORUM, "x-message-ttl": int(ttl * 1000), "x-dead-letter-exchange": "",
            "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
        await queue.bind(tier)


RECEIPT_RETRY_DELAY = 2.0  # an early receipt waits this long for its `sent` to be recorded


def retry_delays_configured(settings: Settings) -> list[float]:
    return list(settings.routing.retry_delays)


def retry_delays(settings: Settings) -> list[float]:
    """Every retry tier to declare: the configured ladder plus the receipt tier."""
    return sorted(set(settings.routing.retry_delays) | {RECEIPT_RETRY_DELAY})


def retry_queues(settings: Settings) -> list[tuple[str, float]]:
    """Every delay queue to declare, with its TTL: the configured tiers with their jitter lanes
    (retries are jittered), the receipt tier alone unless it is also a configured one."""
    configured = set(settings.routing.retry_delays)
    return [(topology.retry_queue(delay, lane), topology.retry_lane_ttl(delay, lane))
            for delay in retry_delays(settings)
            for lane in range(topology.JITTER_LANES if delay in configured else 1)]


@dataclass
class Publisher:
    """Publishes persistent messages and waits for the broker's confirm (with a timeout)."""

    channel: aio_pika.abc.AbstractChannel
    timeout: float = 5.0
    # Refuse at once while the broker blocks this connection (a memory or disk alarm) instead of
    # waiting out the confirm timeout: for HTTP ingest, whose clients get a prompt 503 to retry.
    # Everything else waits: workers, so their redeliveries do not spin while the alarm lasts;
    # carriers' receipts, which the broker takes once the alarm clears.
    refuse_while_blocked: bool = False

    async def publish_later(self, delay: float, queue: str, body: bytes, *, headers: dict | None = None,
                            jitter: bool = False) -> None:
        """Through the `delay` tier back to `queue`. With jitter, through a random lane of the tier,
        so the retries of one outage come back spread over the last RETRY_JITTER of the delay."""
        lane = random.randrange(topology.JITTER_LANES) if jitter else 0
        await self.publish(topology.retry_queue(delay, lane), queue, body, headers=headers)

    async def publish(self, exchange: str, routing_key: str, body: bytes, *, headers: dict | None = None,
                      user_id: str | None = None, message_id: str | None = None,
                      content_type: str = "application/json") -> None:
        # Straight to the underlying aiormq channel: aio_pika's Message and Exchange wrappers
        # and an extra wait_for task per publish cost about a third of the client's CPU per publish.
        properties = aiormq.spec.Basic.Properties(content_type=content_type, headers=headers or {},
                                                  delivery_mode=2, user_id=user_id, message_id=message_id)
        # public event exchanges may have no queue bound: only internal hops must be routable
        mandatory = exchange != topology.EVENTS_EXCHANGE
        written = False
        try:
            async with asyncio.timeout(self.timeout):  # also bounds the wait for a reconnect
                if self.channel.is_closed:
                    raise aiormq.exceptions.ChannelInvalidStateError(f"{self.channel!r} closed")
                channel = await self.channel.get_underlay_channel()
                if self.refuse_while_blocked and broker_blocked(channel):
                    raise PublishFailed(f"{exchange or 'default'}/{routing_key}: the broker is blocking "
                                        "publishers (a memory or disk alarm)")
                written = True
                confirm = await self._publish_on(channel)(body, exchange=exchange, routing_key=routing_key,
                                                          properties=properties, mandatory=mandatory)
        except PUBLISH_ERRORS as exc:
            failure = PublishUncertain if written else PublishFailed
            raise failure(f"{exchange or 'default'}/{routing_key}: {type(exc).__name__}: {exc}") from exc
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this task itself is being cancelled
            # aiormq cancels the confirms it can no longer get when it finds the connection dead
            failure = PublishUncertain if written else PublishFailed
            raise failure(f"{exchange or 'default'}/{routing_key}: connection lost before the confirm") from exc
        if not isinstance(confirm, aiormq.spec.Basic.Ack):
            raise PublishFailed(f"{exchange or 'default'}/{routing_key}: not confirmed ({type(confirm).__name__})")

    @staticmethod
    def _publish_on(channel: aiormq.Channel):
        """Concurrent publishes share a socket write (a reconnect brings a new underlying channel)."""
        batcher = batcher_for(channel)
        return batcher.publish if batcher is not None else channel.basic_publish

    async def publish_each(self, items: list[tuple[str, str, bytes, dict | None]]) -> list[PublishFailed | None]:
        """Publish concurrently; one result per item: None when confirmed, else why not."""
        if len(items) == 1:  # a single request's message: no task and gather around it
            exchange, routing_key, body, headers = items[0]
            try:
                await self.publish(exchange, routing_key, body, headers=headers)
            except PublishFailed as exc:
                return [exc]
            except Exception as exc:  # noqa: BLE001 — as gather(return_exceptions=True) would report it
                return [PublishFailed(str(exc))]
            return [None]
        results = await asyncio.gather(
            *(self.publish(ex, key, body, headers=headers) for ex, key, body, headers in items),
            return_exceptions=True)
        return [None if r is None else r if isinstance(r, PublishFailed) else PublishFailed(str(r))
                for r in results]

    async def publish_many(self, items: list[tuple[str, str, bytes, dict | None]]) -> None:
        """Publish concurrently; raises PublishFailed if any one fails."""
        for failure in await self.publish_each(items):
            if failure is not None:
                raise failure


def broker_blocked(channel: aiormq.Channel) -> bool:
    """Whether the broker has sent this connection `connection.blocked` and not yet `unblocked`.

    aiormq keeps that only in a private event; should it ever move, this answers False and
    publishes wait for their confirm timeout, as they would without it.
    """
    unblocked = getattr(channel.connection, "_Connection__connection_unblocked", None)
    return isinstance(unblocked, asyncio.Event) and not unblocked.is_set()


async def open_channel(connection, prefetch: int = 0, confirms: bool = True):
    channel = await connection.channel(publisher_confirms=confirms)
    if prefetch:
        await channel.set_qos(prefetch_count=prefetch)
    return channel


Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]
BatchHandler = Callable[[list[AbstractIncomingMessage]], Awaitable[None]]


async def dead_letter(publisher: Publisher, message: AbstractIncomingMessage, reason: str) -> None:
    headers = dict(message.headers or {})
    headers["x-death-reason"] = reason[:500]
    headers["x-original-routing-key"] = message.routing_key or ""
    await publisher.publish(topology.DEAD_EXCHANGE, "", message.body, headers=headers)


async def _settle(message: AbstractIncomingMessage, ok: bool, multiple: bool = False) -> None:
    """Ack (or requeue) a delivery; acks of concurrent handlers share a socket write."""
    with contextlib.suppress(*PUBLISH_ERRORS):
        batcher = batcher_for(message.channel)
        if batcher is None:
            await (message.ack(multiple=multiple) if ok else message.nack(requeue=True))
        elif ok:
            await batcher.ack(message.delivery_tag, multiple=multiple)
        else:
            await batcher.nack(message.delivery_tag, requeue=True)


async def consume(channel, queue_name: str, handler: Handler, *, publisher: Publisher, stop: asyncio.Event,
                  concurrency: int, on_poison: Callable[[str], None] | None = None,
                  drain_seconds: float = 20.0) -> None:
    """Run `handler` on each message, up to `concurrency` at once; ack after it returns.

    A handler that raises has hit poison input or a bug: the message goes to the dead-letter
    queue with the reason. If even that publish fails the message is requeued.
    """
    # declared (passively) rather than fetched: a robust channel restores only declared queues'
    # consumers after a reconnect
    queue = await channel.declare_queue(queue_name, passive=True)
    in_flight: set[asyncio.Task] = set()
    slots = asyncio.Semaphore(concurrency)

    async def run(message: AbstractIncomingMessage) -> None:
        try:
            await _run(message)
        finally:
            slots.release()

    async def _run(message: AbstractIncomingMessage) -> None:
        await _handle_one(message, handler, publisher, queue_name, on_poison)

    async def on_message(message: AbstractIncomingMessage) -> None:
        await slots.acquire()
        task = asyncio.create_task(run(message))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)

    tag = await queue.consume(on_message)
    await stop.wait()
    with contextlib.suppress(*PUBLISH_ERRORS):
        await queue.cancel(tag)
    if in_flight:
        await asyncio.wait(in_flight, timeout=drain_seconds)


async def consume_batches(channel, queue_name: str, handler: BatchHandler, *, publisher: Publisher,
                          stop: asyncio.Event, max_batch: int = 200, max_wait: float = 0.02,
                          on_poison: Callable[[str], None] | None = None) -> None:
    """Collect up to `max_batch` messages (or `max_wait` seconds), handle them together, ack with one frame.

    If the batch handler raises, each message is retried alone so one poison message does
    not dead-letter its neighbours.
    """
    # declared (passively) rather than fetched: a robust channel restores only declared queues'
    # consumers after a reconnect
    queue = await channel.declare_queue(queue_name, passive=True)
    buffer: list[AbstractIncomingMessage] = []
    wake = asyncio.Event()

    async def on_message(message: AbstractIncomingMessage) -> None:
        buffer.append(message)
        wake.set()

    tag = await queue.consume(on_message)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            if not buffer:
                wake.clear()
                waiter = asyncio.ensure_future(wake.wait())
                await asyncio.wait({waiter, stopping}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if not buffer:
                    break  # stopping, nothing left
            if len(buffer) < max_batch:
                await asyncio.sleep(max_wait)  # let a batch gather
            batch = buffer[:max_batch]
            del buffer[:max_batch]
            await _handle_batch(batch, handler, publisher, queue_name, on_poison)
            if stop.is_set() and tag is not None:
                with contextlib.suppress(*PUBLISH_ERRORS):
                    await queue.cancel(tag)
                tag = None
    finally:
        stopping.cancel()
        if tag is not None:
            with contextlib.suppress(*PUBLISH_ERRORS):
                await queue.cancel(tag)


async def _handle_one(message: AbstractIncomingMessage, handler: Handler, publisher: Publisher, queue_name: str,
                      on_poison: Callable[[str], None] | None) -> None:
    """Handle, then settle: ack on success; requeue when the broker would not confirm our
    outputs; dead-letter (with the reason) on poison input or a bug, requeue if even that fails."""
    try:
        await handler(message)
    except PublishFailed as exc:  # broker trouble: let the message come back later
        log.warning("publish failed, requeueing", extra={"queue": queue_name, "error": str(exc)})
        await _settle(message, ok=False)
        return
    except Exception as exc:  # noqa: BLE001 — poison or bug: dead-letter, keep consuming
        log.exception("handler failed; dead-lettering", extra={"queue": queue_name})
        if on_poison:
            on_poison(queue_name)
        try:
            await dead_letter(publisher, message, f"{type(exc).__name__}: {exc}")
        except PublishFailed:
            await _settle(message, ok=False)
            return
    await _settle(message, ok=True)


async def _handle_batch(batch, handler, publisher, queue_name, on_poison) -> None:
    try:
        await handler(batch)
    except PublishFailed as exc:
        log.warning("publish failed, requeueing batch", extra={"queue": queue_name, "error": str(exc)})
        for message in batch:
            await _settle(message, ok=False)
        return
    except Exception:  # noqa: BLE001 — find the poison one by one
        for message in batch:
            await _handle_one(message, lambda m: handler([m]), publisher, queue_name, on_poison)
        return
    last = batch[-1]
    same_channel = False  # stays so if the channel closed (then every ack below fails quietly too)
    with contextlib.suppress(*PUBLISH_ERRORS):
        same_channel = all(m.channel is last.channel for m in batch)
    if same_channel:
        await _settle(last, ok=True, multiple=True)
    else:
        for message in batch:
            await _settle(message, ok=True)


async def queue_counts(channel, name: str):
    """Fresh (messages, consumers) of a queue. Declared on the underlying channel: a robust
    channel caches its declare results, so asking it again would repeat the first answer."""
    result = await (await channel.get_underlay_channel()).queue_declare(queue=name, passive=True)
    return result.message_count, result.consumer_count


async def queue_depths(channel, names: list[str]) -> dict[str, int]:
    depths = {}
    for name in names:
        with contextlib.suppress(*PUBLISH_ERRORS):
            depths[name] = (await queue_counts(channel, name))[0]
    return depths


def headers_of(message: AbstractIncomingMessage) -> dict[str, Any]:
    return dict(message.headers or {})
