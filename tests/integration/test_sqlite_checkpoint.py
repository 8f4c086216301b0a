"""SQLite's WAL is copied back into the database file by the store's checkpointer thread, not by
whichever commit happens to cross SQLite's automatic threshold (that commit's fsync held up
every request waiting on it)."""
import asyncio
from pathlib import Path

from router import requests
from workers.ingest import intake
from workers.store import open_store
from workers.store.checkpointer import CHECKPOINT_EVERY_SECONDS


async def test_the_wal_is_checkpointed_in_the_background(sqlite_url):
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    store = await open_store(sqlite_url)
    try:
        await store.migrate()
        await asyncio.sleep(CHECKPOINT_EVERY_SECONDS * 3)
        before = path.stat().st_size
        request = requests.parse({"channel": "sms", "to": "+447911123456", "body": "x" * 200})
        for _ in range(5):  # a few hundred pages: far below SQLite's own threshold of 1,000
            await store.insert_messages([intake.accept(request, "acc_1")[1] for _ in range(100)])
        wal_pages = Path(f"{path}-wal").stat().st_size // 4096
        assert 50 < wal_pages < 1000, f"{wal_pages} WAL pages: the test needs a WAL below the automatic threshold"

        deadline = asyncio.get_running_loop().time() + 5
        while path.stat().st_size == before and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        assert path.stat().st_size > before, "nothing was checkpointed into the database file"
    finally:
        await store.close()
