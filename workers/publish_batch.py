"""Concurrent publishes (and acks) on one channel, written to the socket together.

aiormq writes each `basic_publish` as its own frame set under the channel lock and waits
for the writer task to drain it, so N concurrent publishes cost N lock hand-offs, N
writer-task round trips and N `send` syscalls; each ack costs a write of its own too. A
status batch publishes dozens of events at once, and a busy gateway, route or dispatch
worker has as many publishes and acks in flight as requests or messages. Here the frames
that arrive while one write is being queued go together in the next one: one lock, one
marshalled payload, one write. Each publish still gets its own delivery tag and its own
confirm, exactly as `basic_publish` registers them (mandatory returns included).

This reaches into aiormq's channel (its lock, delivery tags, confirmation map and write
queue); `batcher_for()` checks once per channel that they are there, and gives None when
they are not: the Publisher then falls back to `basic_publish`.
"""
from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from random import getrandbits
from uuid import UUID

import aiormq
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.header import ContentHeader

_CHANNEL_PARTS = ("lock", "delivery_tag", "confirmations", "message_id_delivery_tag", "write_queue",
                  "_split_body", "create_future", "publisher_confirms", "number")


def supported(channel: aiormq.Channel) -> bool:
    return all(hasattr(channel, part) for part in _CHANNEL_PARTS)


def batcher_for(channel: aiormq.Channel) -> "PublishBatcher | None":
    """The one batcher of this channel (a batcher is tied to its channel's delivery tags);
    None if this aiormq lacks what batching needs."""
    batcher = _BATCHERS.get(channel)
    if batcher is None and supported(channel):
        batcher = _BATCHERS[channel] = PublishBatcher(channel)
    return batcher


def _queued_future() -> asyncio.Future:
    return asyncio.get_running_loop().create_future()


@dataclass
class _Settle:
    """An ack or nack of a delivery on this channel."""
    frame: spec.Basic.Ack | spec.Basic.Nack
    queued: asyncio.Future = field(default_factory=_queued_future)


@dataclass
class _Publish:
    body: bytes
    exchange: str
    routing_key: str
    properties: spec.Basic.Properties
    mandatory: bool
    # resolves to the confirmation future once the frames are queued for the socket
    queued: asyncio.Future = field(default_factory=_queued_future)


class PublishBatcher:
    """One per aiormq channel; `publish` has `basic_publish`'s result (the confirm frame)."""

    def __init__(self, channel: aiormq.Channel):
        # weak: the registry below drops a batcher with its channel (after a reconnect)
        self._channel = weakref.ref(channel)
        self._waiting: list[_Publish | _Settle] = []
        self._flush_task: asyncio.Task | None = None

    async def publish(self, body: bytes, *, exchange: str, routing_key: str,
                      properties: spec.Basic.Properties, mandatory: bool):
        confirmation = await self._queue(_Publish(body, exchange, routing_key, properties, mandatory))
        return await confirmation

    async def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        """Returns once the ack is written to the socket, as aiormq's own `basic_ack` does."""
        await self._queue(_Settle(spec.Basic.Ack(delivery_tag=delivery_tag, multiple=multiple)))

    async def nack(self, delivery_tag: int, requeue: bool = True) -> None:
        await self._queue(_Settle(spec.Basic.Nack(delivery_tag=delivery_tag, requeue=requeue)))

    async def _queue(self, item: _Publish | _Settle):
        self._waiting.append(item)
        if self._flush_task is None:
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_all())
        return await item.queued

    async def _flush_all(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    await self._write(batch)
                except BaseException as exc:  # noqa: BLE001 — every caller hears of it
                    _fail(batch, exc)
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
        finally:
            self._flush_task = None
            if self._waiting:  # cancelled (the process is stopping): nobody will write these
                waiting, self._waiting = self._waiting, []
                _fail(waiting, aiormq.exceptions.ChannelInvalidStateError("publisher stopped"))

    async def _write(self, batch: list[_Publish | _Settle]) -> None:
        channel = self._channel()
        if channel is None:
            raise aiormq.exceptions.ChannelInvalidStateError("the channel is gone")
        async with channel.lock:
            # a caller that gave up (timeout, cancellation) before its turn is not sent
            batch = [item for item in batch if not item.queued.done()]
            if not batch:
                return
            first_tag = channel.delivery_tag + 1
            frames: list = []
            registered = []  # (tag, message_id, confirmation) of each publish, in order
            for item in batch:
                if isinstance(item, _Settle):
                    frames.append(item.frame)
                    continue
                tag = first_tag + len(registered)
                message_id = item.properties.message_id or UUID(int=getrandbits(128), version=4).hex
                item.properties.message_id = message_id
                frames.append(spec.Basic.Publish(exchange=item.exchange, routing_key=item.routing_key,
                                                 mandatory=item.mandatory))
                frames.append(ContentHeader(properties=item.properties, body_size=len(item.body)))
                frames.extend(channel._split_body(item.body))
                confirmation = channel.create_future() if channel.publisher_confirms else None
                registered.append((tag, message_id, confirmation))
            # acks are answered once written, as aiormq's basic_ack does: one still queued
            # when the connection closes would bring its message back
            drained = channel.create_future() if len(registered) < len(batch) else None
            payload = ChannelFrame.marshall(frames=frames, channel_number=channel.number, drain_future=drained)
            for tag, message_id, confirmation in registered:
                if confirmation is not None:
                    channel.confirmations[tag] = confirmation
                    channel.message_id_delivery_tag[message_id] = tag
            channel.delivery_tag = first_tag + len(registered) - 1
            try:
                await channel.write_queue.put(payload)
            except BaseException:
                # never queued: the broker has not seen these tags, so they are reused
                channel.delivery_tag = first_tag - 1
                for tag, message_id, confirmation in registered:
                    channel.confirmations.pop(tag, None)
                    if channel.message_id_delivery_tag.get(message_id) == tag:
                        channel.message_id_delivery_tag.pop(message_id)
                    if confirmation is not None:
                        confirmation.cancel()
                raise
        publishes = iter(registered)
        for item in batch:
            if isinstance(item, _Publish):
                _hand_over(channel, item, *next(publishes))
        if drained is not None:
            await drained
            for item in batch:
                if isinstance(item, _Settle) and not item.queued.done():
                    item.queued.set_result(None)


def _hand_over(channel, item: _Publish, tag: int, message_id: str, confirmation: asyncio.Future | None) -> None:
    """The publish is queued: its caller now waits for its own confirm."""
    if confirmation is None:  # a channel without confirms
        confirmation = asyncio.get_running_loop().create_future()
        confirmation.set_result(None)
    else:
        confirmation.add_done_callback(_forget(channel, message_id, tag))
    if not item.queued.done():  # else its caller gave up while the frames were being queued
        item.queued.set_result(confirmation)


def _fail(items: list[_Publish | _Settle], exc: BaseException) -> None:
    error = exc if isinstance(exc, Exception) else \
        aiormq.exceptions.ChannelInvalidStateError(f"{type(exc).__name__} while writing to the channel")
    for item in items:
        if not item.queued.done():
            item.queued.set_exception(error)


_BATCHERS: weakref.WeakKeyDictionary[aiormq.Channel, PublishBatcher] = weakref.WeakKeyDictionary()


def _forget(channel, message_id: str, tag: int):
    def forget(_: asyncio.Future) -> None:
        if channel.message_id_delivery_tag.get(message_id) == tag:
            channel.message_id_delivery_tag.pop(message_id)
    return forget
