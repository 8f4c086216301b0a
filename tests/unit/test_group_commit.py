"""Group commit (workers/store/group_commit.py): concurrent callers share a transaction, and
each still gets its own result or its own error."""
import asyncio

import pytest

from router.errors import UnavailableError
from workers.store.backends import Busy
from workers.store.group_commit import GroupCommit


class Store:
    """Runs each transaction after a yield to the loop; records what each one held. Its write
    lock is always taken, so `run_now` never runs anything (the real SQLite one: test_store_now.py)."""

    def __init__(self, fail_with: Exception | None = None):
        self.transactions: list[int] = []
        self.fail_with = fail_with

    def run_now(self, fn):
        raise Busy()

    async def run(self, fn):
        await asyncio.sleep(0.01)
        if self.fail_with is not None:
            raise self.fail_with
        log: list = []
        result = fn(log)
        self.transactions.append(len(log) if isinstance(result, list) else 1)
        return result


def job(value):
    def fn(cur):
        cur.append(value)
        if value == "bad":
            raise ValueError("bad row")
        return value * 2
    return fn


async def test_calls_arriving_during_a_transaction_share_the_next_one():
    store = Store()
    group = GroupCommit(store)
    first = asyncio.create_task(group.run(job(1)))
    await asyncio.sleep(0.005)  # the first transaction is under way (it takes 0.01 s)
    rest = [asyncio.create_task(group.run(job(n))) for n in range(2, 6)]
    assert await first == 2
    assert await asyncio.gather(*rest) == [4, 6, 8, 10]
    assert store.transactions == [1, 4]


async def test_a_failing_call_gets_its_error_and_the_others_their_results():
    store = Store()
    group = GroupCommit(store)
    calls = [asyncio.create_task(group.run(job(v))) for v in (1, "bad", 3)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert outcomes[0] == 2 and outcomes[2] == 6
    assert isinstance(outcomes[1], ValueError)


async def test_an_unavailable_store_fails_every_waiting_call():
    group = GroupCommit(Store(fail_with=UnavailableError("store away")))
    calls = [asyncio.create_task(group.run(job(v))) for v in (1, 2, 3)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(o, UnavailableError) for o in outcomes)


async def test_idle_again_after_a_group():
    store = Store()
    group = GroupCommit(store)
    assert await group.run(job(1)) == 2
    assert await group.run(job(2)) == 4
    assert store.transactions == [1, 1]


async def test_cancelled_caller_does_not_break_the_group():
    store = Store()
    group = GroupCommit(store)
    first = asyncio.create_task(group.run(job(1)))
    await asyncio.sleep(0)
    gone = asyncio.create_task(group.run(job(2)))
    kept = asyncio.create_task(group.run(job(3)))
    await asyncio.sleep(0)
    gone.cancel()
    assert await first == 2 and await kept == 6
    with pytest.raises(asyncio.CancelledError):
        await gone
