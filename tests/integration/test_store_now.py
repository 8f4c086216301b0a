"""Group commits on a real SQLite store (workers/store/group_commit.py): run on the event loop
while the write lock is free, on the store's thread (waiting for the lock) while another
connection holds it; the WAL checkpointer runs either way."""
import asyncio
import sqlite3
import threading

import pytest

from workers.store import open_store
from workers.store.backends import Busy
from workers.store.group_commit import GroupCommit


def insert(value: int):
    def fn(cur):
        cur.execute("INSERT INTO schema_version (version) VALUES (?)", (value,))
        return threading.current_thread().name
    return fn


async def versions(store) -> list[int]:
    return sorted(r["version"] for r in await store.query("SELECT version FROM schema_version WHERE version > 1000"))


async def test_a_group_runs_on_the_loop_while_the_write_lock_is_free(tmp_path):
    store = await open_store(f"sqlite:///{tmp_path / 'msgroute.db'}")
    try:
        group = GroupCommit(store)
        where = await asyncio.gather(*(group.run(insert(1000 + n)) for n in range(1, 6)))
        assert set(where) == {threading.main_thread().name}
        assert await versions(store) == [1001, 1002, 1003, 1004, 1005]
        assert any(t.name == "sqlite-checkpoint" for t in threading.enumerate())
    finally:
        await store.close()


async def test_a_group_waits_on_the_store_thread_while_another_connection_writes(tmp_path):
    path = tmp_path / "msgroute.db"
    store = await open_store(f"sqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process is writing
        with pytest.raises(Busy):
            store.run_now(insert(999_999))
        group = GroupCommit(store)
        calls = asyncio.gather(*(group.run(insert(1000 + n)) for n in range(1, 4)))
        await asyncio.sleep(0.2)
        assert not calls.done()  # waiting for the lock, without holding up the loop
        other.execute("COMMIT")
        where = await calls
        assert all(name.startswith("sqlite") for name in where), where
        assert await versions(store) == [1001, 1002, 1003]
    finally:
        other.close()
        await store.close()


async def test_a_failed_inline_group_commits_nothing_and_each_caller_gets_its_own_outcome(tmp_path):
    store = await open_store(f"sqlite:///{tmp_path / 'msgroute.db'}")
    try:
        group = GroupCommit(store)

        def bad(cur):
            cur.execute("INSERT INTO schema_version (version) VALUES (?)", (1002,))
            raise ValueError("bad row")
        outcomes = await asyncio.gather(group.run(insert(1001)), group.run(bad), group.run(insert(1003)),
                                        return_exceptions=True)
        assert isinstance(outcomes[1], ValueError)
        assert await versions(store) == [1001, 1003]
    finally:
        await store.close()
