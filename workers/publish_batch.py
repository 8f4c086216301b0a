"""Concurrent publishes on one channel, written to the socket together.

aiormq writes each `basic_publish` as its own frame set under the channel lock and waits
for the writer task to drain it, so N concurrent publishes cost N lock hand-offs, N
writer-task round trips and N `send` syscalls. A status batch publishes dozens of events
at once, and a busy gateway or route worker has as many publishes in flight as requests or
messages. Here the publishes that arrive while one write is being queued go together in the
next one: one lock, one marshalled payload, one write; each still gets its own delivery tag
and its own confirm, exactly as `basic_publish` registers them (mandatory returns included).

This reaches into aiormq's channel (its lock, delivery tags, confirmation map and write
queue); `supported()` checks they are there, and the Publisher falls back to
`basic_publish` when they are not.
"""
from __future__ import annotations

import asyncio
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


@dataclass
class _Publish:
    body: bytes
    exchange: str
    routing_key: str
    properties: spec.Basic.Properties
    mandatory: bool
    # resolves to the confirmation future once the frames are queued for the socket
    queued: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class PublishBatcher:
    """One per aiormq channel; `publish` has `basic_publish`'s result (the confirm frame)."""

    def __init__(self, channel: aiormq.Channel):
        self.channel = channel
        self._waiting: list[_Publish] = []
        self._flush_task: asyncio.Task | None = None

    async def publish(self, body: bytes, *, exchange: str, routing_key: str,
                      properties: spec.Basic.Properties, mandatory: bool):
        item = _Publish(body, exchange, routing_key, properties, mandatory)
        self._waiting.append(item)
        if self._flush_task is None:
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_all())
        confirmation = await item.queued
        return await confirmation

    async def _flush_all(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                await self._write(batch)
        finally:
            self._flush_task = None

    async def _write(self, batch: list[_Publish]) -> None:
        channel = self.channel
        try:
            async with channel.lock:
                # a caller that gave up (timeout, cancellation) before its turn is not sent
                batch = [item for item in batch if not item.queued.done()]
                if not batch:
                    return
                first_tag = channel.delivery_tag + 1
                frames: list = []
                registered = []
                for offset, item in enumerate(batch):
                    tag = first_tag + offset
                    message_id = item.properties.message_id or UUID(int=getrandbits(128), version=4).hex
                    item.properties.message_id = message_id
                    frames.append(spec.Basic.Publish(exchange=item.exchange, routing_key=item.routing_key,
                                                     mandatory=item.mandatory))
                    frames.append(ContentHeader(properties=item.properties, body_size=len(item.body)))
                    frames.extend(channel._split_body(item.body))
                    confirmation = channel.create_future() if channel.publisher_confirms else None
                    registered.append((tag, message_id, confirmation))
                payload = ChannelFrame.marshall(frames=frames, channel_number=channel.number)
                for tag, message_id, confirmation in registered:
                    if confirmation is not None:
                        channel.confirmations[tag] = confirmation
                        channel.message_id_delivery_tag[message_id] = tag
                channel.delivery_tag = first_tag + len(batch) - 1
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
        except BaseException as exc:
            for item in batch:
                if not item.queued.done():
                    item.queued.set_exception(exc if isinstance(exc, Exception) else
                                              aiormq.exceptions.ChannelInvalidStateError(repr(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        for item, (tag, message_id, confirmation) in zip(batch, registered):
            if confirmation is None:
                confirmation = asyncio.get_running_loop().create_future()
                confirmation.set_result(None)
            else:
                confirmation.add_done_callback(_forget(channel, message_id, tag))
            if item.queued.done():  # its caller gave up while the frames were being queued
                continue
            item.queued.set_result(confirmation)


def _forget(channel, message_id: str, tag: int):
    def forget(_: asyncio.Future) -> None:
        if channel.message_id_delivery_tag.get(message_id) == tag:
            channel.message_id_delivery_tag.pop(message_id)
    return forget
