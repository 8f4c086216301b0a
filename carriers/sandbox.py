"""The sandbox carrier: behaves like a well-behaved carrier for every channel, with
magic addresses for exact tests (SPEC §8; also push tokens starting `unregistered`,
which the carrier reports unregistered), and sends its receipts through the real
webhook path `{public_url}/webhooks/dlr/{carrier}` as signed JSON.

Receipt wire format: POST, a JSON array of receipts `[{"id", "ref" (our message id),
"status": "delivered"|"undelivered", "error"}, …]` (a single object is accepted too), header
`X-Sandbox-Signature: <hex HMAC-SHA256(webhook_secret, raw body)>`. Like SendGrid's and
Infobip's webhooks, receipts that fall due while one POST is under way go together in the
next (at most `receipt_batch` per POST); an idle sandbox posts each receipt when it is due.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import random
import uuid

import aiohttp
import orjson

from carriers.base import (
    TRANSPORT_ERRORS, CarrierConfig, InboundRequest, PermanentFailure, Receipt, SendResult,
    TemporaryFailure,
)
from router.messages import Channel, Envelope, Status

DEFAULT_SECRET = "sandbox-secret"


def _behaviour(envelope: Envelope) -> str:
    """ok | fail | flaky | bounce, from the magic addresses."""
    to = envelope.to
    if envelope.channel == Channel.SMS:
        return {"+15005550001": "fail", "+15005550002": "flaky", "+15005550003": "bounce"}.get(to, "ok")
    if envelope.channel == Channel.EMAIL:
        local = to.split("@", 1)[0].lower()
        return local if local in ("fail", "flaky", "bounce") else "ok"
    for prefix in ("fail", "flaky", "bounce", "unregistered"):
        if to.startswith(prefix):
            return prefix
    return "ok"


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class SandboxAdapter:
    def __init__(self, config: CarrierConfig, http: aiohttp.ClientSession):
        self.config = config
        self._http = http
        settings = config.settings
        self._latency = float(settings.get("latency_ms", 0)) / 1000
        self._receipt_delay = float(settings.get("receipt_delay_ms", 50)) / 1000
        self._failure_rate = float(settings.get("failure_rate", 0))
        self._secret = str(settings.get("webhook_secret", DEFAULT_SECRET))
        self._send_receipts = bool(settings.get("send_receipts", True))
        self._batch = max(1, int(settings.get("receipt_batch", 100)))
        self._due: collections.deque[tuple[float, dict]] = collections.deque()  # (when due, receipt), in order
        self._poster: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()  # batches the gateway refused, being retried

    async def send(self, envelope: Envelope) -> SendResult:
        if self._latency:
            await asyncio.sleep(self._latency)
        behaviour = _behaviour(envelope)
        if behaviour == "unregistered":
            raise PermanentFailure("device_unregistered", "sandbox: the device token is not registered")
        if behaviour == "fail":
            raise PermanentFailure("carrier_rejected", "sandbox: permanent failure for this address")
        if behaviour == "flaky" or (self._failure_rate and random.random() < self._failure_rate):
            raise TemporaryFailure("carrier_unavailable", "sandbox: transient failure")
        carrier_id = "SB" + uuid.uuid4().hex
        if self._send_receipts:
            outcome = "undelivered" if behaviour == "bounce" else "delivered"
            self._queue_receipt({"id": carrier_id, "ref": envelope.id, "status": outcome,
                                 "error": "sandbox_bounce" if outcome == "undelivered" else None})
        return SendResult(carrier_message_id=carrier_id)

    def _queue_receipt(self, receipt: dict) -> None:
        loop = asyncio.get_running_loop()
        self._due.append((loop.time() + self._receipt_delay, receipt))
        if self._poster is None or self._poster.done():
            self._poster = asyncio.create_task(self._post_due())

    async def _post_due(self) -> None:
        """Post receipts as they fall due; those due while a POST is under way go in the next."""
        loop = asyncio.get_running_loop()
        while self._due:
            wait = self._due[0][0] - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            now = loop.time()
            batch = []
            while self._due and self._due[0][0] <= now and len(batch) < self._batch:
                batch.append(self._due.popleft()[1])
            body = orjson.dumps(batch)
            if not await self._post(body):  # refused: retry it aside, keep the rest flowing
                task = asyncio.create_task(self._retry(body))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    async def _post(self, body: bytes) -> bool:
        headers = {"Content-Type": "application/json", "X-Sandbox-Signature": sign(self._secret, body)}
        try:
            async with self._http.post(self.config.receipt_url, data=body, headers=headers) as resp:
                return resp.status < 500
        except TRANSPORT_ERRORS:
            return False

    async def _retry(self, body: bytes) -> None:
        for delay in (0.2, 0.5, 1, 2, 4, 8):  # like a carrier, retry receipts the gateway refused
            await asyncio.sleep(delay)
            if await self._post(body):
                return

    def verify_receipt(self, request: InboundRequest) -> bool:
        given = request.header("x-sandbox-signature")
        if not (given and given.isascii() and given.isprintable()):  # hmac compares ASCII str only
            return False
        return hmac.compare_digest(given, sign(self._secret, request.body))

    def parse_receipt(self, request: InboundRequest) -> list[Receipt]:
        payload = orjson.loads(request.body)
        return [_receipt(item) for item in (payload if isinstance(payload, list) else [payload])]

    async def aclose(self) -> None:
        """Let receipts already scheduled go out (bounded), as a carrier would."""
        waiting = {t for t in (self._poster, *self._pending) if t is not None and not t.done()}
        if waiting:
            await asyncio.wait(waiting, timeout=self._receipt_delay + 5)


def _receipt(payload: dict) -> Receipt:
    status = {"delivered": Status.DELIVERED, "undelivered": Status.UNDELIVERED,
              "failed": Status.FAILED}.get(payload.get("status"), Status.SENT)
    error = payload.get("error")
    return Receipt(carrier_message_id=str(payload["id"]), status=status,
                   error_code=error, error_message="sandbox bounce" if error else None,
                   extra={"msgroute_id": payload.get("ref")})
