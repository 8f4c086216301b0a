"""The gateway's estimate of a pool sender's backlog (workers/ingest/sender_backlog.py)."""
import pytest

from router.errors import ValidationError
from router.requests import parse
from workers.ingest.sender_backlog import BACKLOG_SQL, SenderBacklog
from workers.ingest.sender_pools import SenderPools


class Store:
    """Answers the backlog query with `counts`; counts the queries."""

    def __init__(self, counts: dict[str, int]):
        self.counts = counts
        self.queries = 0

    async def query(self, sql, params=()):
        assert sql == BACKLOG_SQL
        self.queries += 1
        return [{"from_addr": a, "n": n} for a, n in self.counts.items()]


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


async def test_snapshot_drains_at_the_rate_and_counts_what_this_gateway_accepted():
    store, clock = Store({"+447400000001": 10}), Clock()
    backlog = SenderBacklog(store, refresh_seconds=2.0, clock=clock)
    assert await backlog.depth("+447400000001", 2.0) == 10
    assert await backlog.depth("+447400000009", 2.0) == 0
    backlog.accepted("+447400000001")
    clock.now += 1.5  # within the refresh interval: no new query; 3 drained at 2/s, 1 added
    assert await backlog.depth("+447400000001", 2.0) == 8
    assert store.queries == 1
    store.counts = {"+447400000001": 4}
    clock.now += 1.0  # stale: a fresh snapshot replaces the estimate and the local count
    assert await backlog.depth("+447400000001", 2.0) == 4
    assert store.queries == 2
    clock.now += 60
    store.counts = {}
    assert await backlog.depth("+447400000001", 2.0) == 0  # never below zero


class Pools(SenderPools):
    def __init__(self, pool: list[dict], backlog: SenderBacklog):
        super().__init__(store=None)
        self._pool = pool
        self.backlog = backlog

    async def pool(self, account_id, channel):
        return self._pool


SLOW = {"address": "+447400000001", "country": "GB", "rate_limit": 2.0}
FAST = {"address": "+447400000002", "country": "FR", "rate_limit": 50.0}


async def test_the_chosen_or_named_sender_is_refused_past_validity():
    pools = Pools([SLOW, FAST], SenderBacklog(Store({"+447400000001": 30}), clock=Clock()))
    request = parse({"channel": "sms", "to": "+447400123456", "body": "x", "validity_period": 10})
    with pytest.raises(ValidationError) as refused:
        await pools.apply("acc", request)  # the GB sender is chosen: 30 queued at 2/s = 15 s > 10 s
    error = refused.value
    assert (error.status, error.code, error.field, error.retry_after) == (429, "would_expire", "from", 5)
    assert "+447400000001" in error.message
    # the other sender, named; a longer validity; no validity; a scheduled message: all accepted
    assert (await pools.apply("acc", request.model_copy(update={"from_": FAST["address"]})))[1] == 50.0
    assert (await pools.apply("acc", request.model_copy(update={"validity_period": 60})))[0].from_ == SLOW["address"]
    assert (await pools.apply("acc", request.model_copy(update={"validity_period": None})))[1] == 2.0
    later = request.model_copy(update={"send_at": "2099-01-01T00:00:00.000Z"})  # its backlog is then's
    assert (await pools.apply("acc", later))[0].from_ == SLOW["address"]
    with pytest.raises(ValidationError):  # naming the busy sender is refused alike
        await pools.apply("acc", request.model_copy(update={"from_": SLOW["address"]}))
