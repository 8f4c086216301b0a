"""Applying an account's sender pool to a request at ingest (SPEC §12 sender pools), and
refusing a message that its sender's backlog would hold past its validity period."""
from __future__ import annotations

import math
import time

from router import senders as choosing
from router.destination import resolve
from router.errors import ValidationError
from router.requests import SendRequest
from workers.ingest.admission import WouldExpire
from workers.ingest.sender_backlog import SenderBacklog
from workers.store import senders

CACHE_SECONDS = 2.0


class SenderPools:
    def __init__(self, store):
        self._store = store
        self._cache: dict[tuple[str, str], tuple[float, list[dict]]] = {}
        self.backlog = SenderBacklog(store)

    async def pool(self, account_id: str, channel: str) -> list[dict]:
        now = time.monotonic()
        hit = self._cache.get((account_id, channel))
        if hit and hit[0] > now:
            return hit[1]
        pool = await senders.listing(self._store, account_id, channel)
        self._cache[(account_id, channel)] = (now + CACHE_SECONDS, pool)
        return pool

    def forget(self, account_id: str) -> None:
        for key in [k for k in self._cache if k[0] == account_id]:
            del self._cache[key]

    async def apply(self, account_id: str, request: SendRequest) -> tuple[SendRequest, float | None]:
        """The request with its sender filled in from the pool, and that sender's rate limit."""
        pool = await self.pool(account_id, request.channel)
        if not pool:
            return request, None
        if request.from_ is not None:
            sender = next((s for s in pool if s["address"] == request.from_), None)
            if sender is None:
                raise ValidationError("invalid_sender", "from is not in this account's sender pool for "
                                      f"{request.channel}", "from")
        else:
            country = resolve("sms", request.to, with_type=False).key if request.channel == "sms" else None
            sender = choosing.choose(pool, request.to, country)
            request = request.model_copy(update={"from_": sender["address"]})
        rate = sender["rate_limit"]
        if rate and not request.send_at:  # a scheduled message joins the backlog of its own time
            if request.validity_period:
                await self._admit(sender["address"], rate, request.validity_period)
            self.backlog.accepted(sender["address"])
        return request, rate

    async def _admit(self, address: str, rate: float, validity: float) -> None:
        """Refuse (429 would_expire, field `from`) when the sender's backlog at its rate
        outlasts the message's validity period; the sticky sender is not swapped for another."""
        ahead = await self.backlog.depth(address, rate)
        wait = ahead / rate
        if wait > validity:
            raise WouldExpire(wait - validity, f"sender {address} has about {math.ceil(ahead)} messages queued, "
                              f"{wait:.0f} s at its rate_limit of {rate:g}/s, longer than this message's "
                              "validity_period; retry later, allow a longer validity_period or send from another "
                              "sender", "from")
