"""Bearer-key authentication and the per-account ingest rate limit."""
from __future__ import annotations

import time

from aiohttp import web

from router.errors import ValidationError

ACCOUNT_CACHE_SECONDS = 2.0  # a suspension or key rotation takes effect within this


class AccountCache:
    def __init__(self, store):
        self._store = store
        self._cache: dict[str, tuple[float, dict | None]] = {}

    async def lookup(self, api_key: str) -> dict | None:
        now = time.monotonic()
        hit = self._cache.get(api_key)
        if hit and hit[0] > now:
            return hit[1]
        account = await self._store.account_by_api_key(api_key)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[api_key] = (now + ACCOUNT_CACHE_SECONDS, account)
        return account

    def forget(self) -> None:
        self._cache.clear()


class RateLimiter:
    """A token bucket per account: `rate` requests per second, bursts up to one second's worth."""

    def __init__(self, rate: float):
        self.rate = rate
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, account_id: str, cost: int = 1) -> float:
        """0 if allowed, else the seconds to wait."""
        now = time.monotonic()
        tokens, last = self._buckets.get(account_id, (self.rate, now))
        tokens = min(self.rate, tokens + (now - last) * self.rate)
        if tokens >= cost or (cost > self.rate and tokens >= self.rate):
            self._buckets[account_id] = (tokens - cost, now)
            return 0.0
        self._buckets[account_id] = (tokens, now)
        return (cost - tokens) / self.rate


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ValidationError("unauthorized", "send Authorization: Bearer <api_key>", status=401)
    # Keys and the admin token are printable ASCII; anything else (bytes the HTTP parser kept as
    # surrogate escapes, non-ASCII text) can match neither and must not reach hashing or hmac.
    if not (token.isascii() and token.isprintable()):
        raise ValidationError("unauthorized", "the bearer token must be printable ASCII", status=401)
    return token


async def authenticate(request: web.Request, cache: AccountCache, allow_suspended: bool = False) -> dict:
    account = await cache.lookup(bearer(request))
    if account is None:
        raise ValidationError("unauthorized", "unknown API key", status=401)
    if account["status"] == "suspended" and not allow_suspended:
        raise ValidationError("account_suspended", "this account is suspended; it may request a review at "
                              "POST /v1/account/review-request", status=403)
    if account["status"] == "closed":
        raise ValidationError("unauthorized", "this account is closed", status=401)
    return account
