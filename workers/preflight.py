"""Before `msgroute run` starts children: is the broker reachable, is the store ready?

One clear line (via UnavailableError) instead of N children each failing and restarting.
"""
from __future__ import annotations

from router.settings import Settings
from workers import amqp
from workers.store import open_store


async def check_dependencies(settings: Settings) -> None:
    connection = await amqp.connect(settings, "msgroute preflight")
    try:
        channel = await amqp.open_channel(connection)
        await amqp.declare_topology(channel, settings)
    finally:
        await connection.close()
    store = await open_store(settings.store.url)
    await store.close()
