"""The sandbox carrier: behaves like a well-behaved carrier for every channel, with
magic addresses for exact tests (SPEC §8; also push tokens starting `unregistered`,
which the carrier reports unregistered), and sends its receipts through the real
webhook path `{public_url}/webhooks/dlr/{carrier}` as signed JSON.

Receipt wire format: POST, JSON `{"id", "ref" (our message id), "status": "delivered"|"undelivered", "error"}`,
header `X-Sandbox-Signature: <hex HMAC-SHA256(webhook_secret, raw body)>`.
"""
from __future__ import annotations

import asyncio
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
        self._pending: set[asyncio.Task] = set()

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
            task = asyncio.create_task(self._deliver_receipt(carrier_id, outcome, envelope.id))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        return SendResult(carrier_message_id=carrier_id)

    async def _deliver_receipt(self, carrier_id: str, outcome: str, reference: str) -> None:
        await asyncio.sleep(self._receipt_delay)
        body = orjson.dumps({
            "id": carrier_id,
            "ref": reference,
            "status": outcome,
            "error": "sandbox_bounce" if outcome == "undelivered" else None,
        })
        headers = {"Content-Type": "application/json", "X-Sandbox-Signature": sign(self._secret, body)}
        for delay in (0.2, 0.5, 1, 2, 4, 8):  # like a carrier, retry a receipt the gateway refused
            try:
                async with self._http.post(self.config.receipt_url, data=body, headers=headers) as resp:
                    if resp.status < 500:
                        return
            except TRANSPORT_ERRORS:
                pass
            await asyncio.sleep(delay)

    def verify_receipt(self, request: InboundRequest) -> bool:
        given = request.header("x-sandbox-signature")
        if not (given and given.isascii() and given.isprintable()):  # hmac compares ASCII str only
            return False
        return hmac.compare_digest(given, sign(self._secret, request.body))

    def parse_receipt(self, request: InboundRequest) -> list[Receipt]:
        payload = orjson.loads(request.body)
        status = {"delivered": Status.DELIVERED, "undelivered": Status.UNDELIVERED,
                  "failed": Status.FAILED}.get(payload.get("status"), Status.SENT)
        error = payload.get("error")
        return [Receipt(carrier_message_id=str(payload["id"]), status=status,
                        error_code=error, error_message="sandbox bounce" if error else None,
                        extra={"msgroute_id": payload.get("ref")})]

    async def aclose(self) -> None:
        """Let receipts already scheduled go out (bounded), as a carrier would."""
        if self._pending:
            await asyncio.wait(self._pending, timeout=self._receipt_delay + 5)
