"""What a worker under test needs, without running the engine: a migrated SQLite store with one
account, the engine's settings, and a channel on the test's vhost with the topology declared."""
from __future__ import annotations

import contextlib

from router.settings import load
from workers import amqp
from workers.store import open_store


@contextlib.asynccontextmanager
async def worker_parts(make_engine, sqlite_url: str, account_name: str, connection_name: str):
    """Yields (settings, store, channel, account)."""
    engine = make_engine(sqlite_url, start=False)
    engine.cli("migrate")
    account = engine.create_account(account_name)
    settings = load(engine.config_path, env=engine.env)
    store = await open_store(sqlite_url)
    connection = await amqp.connect(settings, connection_name)
    try:
        channel = await amqp.open_channel(connection)
        await amqp.declare_topology(channel, settings)
        yield settings, store, channel, account
    finally:
        await connection.close()
        await store.close()
