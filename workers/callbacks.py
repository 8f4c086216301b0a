"""Customer status callbacks: signed POSTs of the status event to the message's callback URL.

Signature header: `X-Msgroute-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
with the account's webhook secret; every retry is signed afresh. 429, 5xx, timeouts and
connection errors are retried through the broker's delay queues (never by sleeping in the
consumer) up to `[callbacks] max_attempts`. Only public addresses are connected to unless
`[callbacks] allow_private_networks` (checked at connection time, so DNS rebinding and
redirects cannot reach an internal address; redirects are not followed at all).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import socket
import time
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

from router import topology
from router.urls import is_public, literal_address
from router.settings import Settings
from workers import amqp, metrics

log = logging.getLogger("msgroute.callbacks")
ATTEMPT_HEADER = "x-msgroute-callback-attempt"
SECRET_CACHE_SECONDS = 30.0


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(secret: str, body: bytes, header: str, tolerance: float = 300, now: float | None = None) -> bool:
    """The receiver's side of the recipe (documented in the README)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("v1", ""))


class BlockedAddress(OSError):
    pass


class PublicOnlyResolver(AbstractResolver):
    """Resolves like aiohttp does, then refuses any non-public address."""

    def __init__(self):
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):
        results = await self._inner.resolve(host, port, family)
        if not results or any(not is_public(r["host"]) for r in results):
            raise BlockedAddress(f"callback host {host} resolves to a non-public address")
        return results

    async def close(self) -> None:
        await self._inner.close()


async def host_is_public(host: str) -> bool:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(is_public(info[4][0]) for info in infos)


def _caused_by(exc: BaseException, kind: type) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, kind) or isinstance(getattr(exc, "os_error", None), kind):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


class CallbackSender:
    def __init__(self, settings: Settings, store, publisher: amqp.Publisher, http: aiohttp.ClientSession):
        self.settings = settings.callbacks
        self.delays = amqp.retry_delays_configured(settings)
        self.store = store
        self.publisher = publisher
        self._secrets: dict[str, tuple[float, str | None]] = {}
        connector = None if self.settings.allow_private_networks else aiohttp.TCPConnector(
            resolver=PublicOnlyResolver())
        self._http = aiohttp.ClientSession(connector=connector) if connector else http
        self._own_session = connector is not None

    async def aclose(self) -> None:
        if self._own_session:
            await self._http.close()

    async def _secret(self, account_id: str) -> str | None:
        hit = self._secrets.get(account_id)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        account = await self.store.get_account(account_id)
        secret = account["webhook_secret"] if account else None
        self._secrets[account_id] = (time.monotonic() + SECRET_CACHE_SECONDS, secret)
        return secret

    async def handle(self, message) -> None:
        job = orjson.loads(message.body)
        attempt = int((message.headers or {}).get(ATTEMPT_HEADER, 1))
        secret = await self._secret(job["account_id"])
        if secret is None:
            return
        body = orjson.dumps(job["event"])
        outcome = await self._post(job["url"], body, secret)
        metrics.callbacks_total.labels(outcome).inc()
        if outcome == "retry":
            if attempt >= self.settings.max_attempts:
                metrics.callbacks_total.labels("gave_up").inc()
                log.warning("callback gave up", extra={"message_id": job["event"].get("message_id"),
                                                       "account_id": job["account_id"], "attempts": attempt})
                return
            delay = self.delays[min(attempt - 1, len(self.delays) - 1)]
            await self.publisher.publish_later(delay, topology.CALLBACKS_QUEUE, message.body, jitter=True,
                                               headers={ATTEMPT_HEADER: attempt + 1})

    async def _post(self, url: str, body: bytes, secret: str) -> str:
        if not self.settings.allow_private_networks:
            # aiohttp does not ask the resolver about literal addresses: check those here
            literal = literal_address(urlsplit(url).hostname or "")
            if literal is not None and not is_public(literal):
                return "blocked"
        headers = {"Content-Type": "application/json", "X-Msgroute-Signature": sign(secret, body),
                   "User-Agent": "msgroute-callbacks"}
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        try:
            async with self._http.post(url, data=body, headers=headers, timeout=timeout,
                                       allow_redirects=False) as resp:
                if 200 <= resp.status < 300:
                    return "delivered"
                if resp.status == 429 or resp.status >= 500:
                    return "retry"
                return "refused"
        except BlockedAddress:
            return "blocked"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return "blocked" if _caused_by(exc, BlockedAddress) else "retry"
