"""Group commit: concurrent callers' store work in one transaction.

While one transaction is in flight, the work that arrives waits and goes together in the
next one: one BEGIN/COMMIT and one hop to the store's thread per group instead of one per
caller, with no added wait when idle. Each caller still gets its own result only once the
transaction holding its work has committed.

A group runs on the event loop itself when SQLite's write lock is free (`run_now`: no hop
to the store's thread, whose statements would each wait for the busy loop to hand back the
GIL), and on the store's thread, where it may wait for the lock, when it is not.
"""
from __future__ import annotations

import asyncio
from typing import Callable, TypeVar

from router.errors import UnavailableError
from workers.store.backends import Busy, Cursor

T = TypeVar("T")


class GroupCommit:
    def __init__(self, store):
        self._store = store
        self._waiting: list[tuple[Callable[[Cursor], object], asyncio.Future]] = []
        self._flushing: asyncio.Task | None = None

    async def run(self, fn: Callable[[Cursor], T]) -> T:
        """`fn(cursor)` in a transaction shared with whatever else is waiting; its result once committed."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((fn, future))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        group: list = []
        try:
            while self._waiting:
                await asyncio.sleep(0)  # the requests already under way in this loop turn join the group
                group, self._waiting = self._waiting, []
                await self._commit(group)
        except BaseException:  # cancelled (shutting down): nobody waits for an answer that will not come
            for _, future in group + self._waiting:
                future.cancel()
            self._waiting = []
            raise
        finally:  # no await since the last empty check: work added now starts a new task
            self._flushing = None

    async def _commit(self, group: list[tuple[Callable[[Cursor], object], asyncio.Future]]) -> None:
        try:
            results = await self._run(lambda cur: [fn(cur) for fn, _ in group])
        except UnavailableError as exc:  # the store is away: every caller's own transaction would fail alike
            for _, future in group:
                _settle(future, exc=exc)
            return
        except Exception as exc:  # noqa: BLE001 — one caller's work failed and took the group with it
            if len(group) == 1:
                _settle(group[0][1], exc=exc)
                return
        else:
            for (_, future), result in zip(group, results):
                _settle(future, result)
            return
        for fn, future in group:  # nothing was committed: each again on its own, for its own outcome
            try:
                result = await self._run(fn)
            except Exception as exc:  # noqa: BLE001 — the caller's own error, raised where it waits
                _settle(future, exc=exc)
            else:
                _settle(future, result)

    async def _run(self, fn: Callable[[Cursor], T]) -> T:
        try:
            return self._store.run_now(fn)
        except Busy:
            return await self._store.run(fn)


def _settle(future: asyncio.Future, result=None, exc: BaseException | None = None) -> None:
    if future.done():  # the caller went away (cancelled); its work stands, as a single call's would
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
