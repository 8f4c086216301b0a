"""Admission control: refuse (429 would_expire) a message that its carrier's backlog would
hold past its validity period, rather than accept it only to let it expire.

The estimate is the backlog of the dispatch queue of the carrier the message would be
routed to first, divided by that carrier's `rate_limit` (carriers without one are not
throttled by us, so they never refuse). Depths come from whatever polls the broker in the
process: the gateway's queue monitor for HTTP ingest, the route worker's capacity watch for
AMQP ingest (both refresh every few seconds). A pool sender's own backlog is checked the
same way once the sender is known (sender_pools.py, measured by sender_backlog.py).
"""
from __future__ import annotations

import math
import time
from typing import Callable

from router import routing, topology
from router.errors import ValidationError
from router.requests import SendRequest


class Admission:
    def __init__(self, settings, depths: Callable[[], dict[str, int] | None]):
        """`depths()`: the latest message count of each dispatch queue, None until first polled."""
        self.router = routing.Router(settings)
        self.limits = {c.name: c.rate_limit for c in settings.carriers if c.rate_limit}
        self.depths = depths

    def check(self, request: SendRequest, allowed_regions: set[str] | None) -> None:
        if not request.validity_period or not self.limits:
            return
        depths = self.depths()
        if depths is None:
            return
        decision = self.router.decide(request.channel, request.to, request.platform, allowed_regions, {},
                                      time.time())
        if not decision.candidates:
            return  # routing will reject it with the reason
        carrier = decision.candidates[0].carrier
        rate = self.limits.get(carrier)
        if not rate:
            return
        backlog = depths.get(topology.dispatch_queue(carrier), 0)
        wait = backlog / rate
        if wait > request.validity_period:
            raise WouldExpire(wait - request.validity_period)


class WouldExpire(ValidationError):
    """429 would_expire, with Retry-After: when the backlog would have drained enough. A
    carrier's backlog names `validity_period`; a pool sender's (sender_pools.py) names `from`."""

    def __init__(self, excess: float, message: str = "the carrier's backlog would hold this message past its "
                 "validity period; retry later or allow a longer validity_period", field: str = "validity_period"):
        super().__init__("would_expire", message, field, status=429)
        self.retry_after = max(1, math.ceil(excess))
