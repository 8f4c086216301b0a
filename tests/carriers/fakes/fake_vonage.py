"""Fake Vonage SMS API, and Vonage's side of signed delivery receipts."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import aiohttp
from aiohttp import web

from tests.carriers.fakes.http import FakeHttpCarrier

REFUSALS = {  # behaviour -> (status, error-text) in an HTTP 200 reply
    "throttled": ("1", "Throughput Rate Exceeded - please wait [ 1000 ] and retry"),
    "invalid_number": ("3", "Invalid to address"),
    "unroutable": ("6", "Unroutable message - rejected"),
}


def sign_dlr(params: dict[str, str], secret: str, method: str = "md5hash") -> dict[str, str]:
    """`params` plus `timestamp` and `sig`, as Vonage signs a webhook."""
    signed = {**params, "timestamp": str(int(time.time()))}
    text = ""
    for key in sorted(signed):
        text += "&" + key + "=" + signed[key].replace("&", "_").replace("=", "_")
    if method == "md5hash":
        sig = hashlib.md5((text + secret).encode()).hexdigest()
    else:
        sig = hmac.new(secret.encode(), text.encode(), getattr(hashlib, method)).hexdigest().upper()
    return {**signed, "sig": sig}


@dataclass(frozen=True)
class Dlr:
    """A delivery receipt the fake sent: to where, with what, and the receiver's answer (0: none)."""

    url: str
    params: dict[str, str]
    status: int


# (part number, parts, the message's form) -> (DLR status, err-code) for that part
Outcome = Callable[[int, int, dict], tuple[str, str]]


class FakeVonage(FakeHttpCarrier):
    """Behaviours: happy, throttled, invalid_number, unroutable, server_error.

    A text longer than one SMS is split as Vonage splits it (153 GSM-7 / 67 UCS-2 characters
    per part), and the reply lists one entry per part, each with its own `message-id`.
    With `dlrs=True` it also does what Vonage does next: after `dlr_delay` seconds, one
    signed delivery receipt per part to the `callback` URL the message gave, with that
    part's `messageId`, our `client-ref`, and the `status`/`err-code` that `outcome` gives
    for the part (default: delivered). `dlr_method` is "GET" (query string) or "POST"
    (JSON), as a Vonage account is configured. `accepted` lists the messages it took as
    (form, parts of its reply); `dlrs_sent` the receipts it sent.
    """

    def __init__(self, behaviour: str = "happy", api_key: str = "key", api_secret: str = "secret",
                 dlrs: bool = False, signature_secret: str = "sigsecret", signature_method: str = "md5hash",
                 dlr_delay: float = 0.1, dlr_method: str = "GET", outcome: Outcome | None = None):
        super().__init__(behaviour)
        self.api_key = api_key
        self.api_secret = api_secret
        self.send_dlrs = dlrs
        self.signature_secret = signature_secret
        self.signature_method = signature_method
        self.dlr_delay = dlr_delay
        self.dlr_method = dlr_method
        self.outcome: Outcome = outcome or (lambda part, parts, form: ("delivered", "0"))
        self.accepted: list[tuple[dict, list[dict]]] = []
        self.dlrs_sent: list[Dlr] = []
        self._dlr_http: aiohttp.ClientSession | None = None
        self._pending: set[asyncio.Task] = set()

    def routes(self):
        return [web.post("/sms/json", self._send)]

    async def __aenter__(self):
        if self.send_dlrs:
            self._dlr_http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return await super().__aenter__()

    async def __aexit__(self, *exc):
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await super().__aexit__(*exc)
        if self._dlr_http is not None:
            await self._dlr_http.close()

    async def dlrs_settled(self, timeout: float = 30) -> None:
        """Wait until every scheduled receipt has been sent (or given up)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)

    def _schedule_dlrs(self, form: dict, parts: list[dict]) -> None:
        for number, part in enumerate(parts, 1):
            status, err = self.outcome(number, len(parts), form)
            params = {
                "msisdn": form["to"], "to": form["from"], "network-code": "23410",
                "messageId": part["message-id"], "price": part["message-price"], "status": status,
                "scts": time.strftime("%y%m%d%H%M", time.gmtime()), "err-code": err, "api-key": self.api_key,
                "client-ref": form.get("client-ref", ""),
                "message-timestamp": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                "nonce": str(uuid.uuid4()),
            }
            task = asyncio.get_running_loop().create_task(self._send_dlr(form["callback"], params))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _send_dlr(self, url: str, params: dict[str, str]) -> None:
        await asyncio.sleep(self.dlr_delay)
        signed = sign_dlr(params, self.signature_secret, self.signature_method)
        status = 0
        for pause in (0.5, 1, 2, 4, 0):  # Vonage retries a receipt the receiver did not take
            try:
                if self.dlr_method == "GET":
                    request = self._dlr_http.get(url, params=signed)
                else:
                    request = self._dlr_http.post(url, json=signed)
                async with request as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, OSError):
                status = 0
            if status == 200 or not pause:
                break
            await asyncio.sleep(pause)
        self.dlrs_sent.append(Dlr(url, signed, status))

    async def _send(self, request: web.Request) -> web.Response:
        if self.behaviour == "server_error":
            return web.Response(status=500, text="Internal Server Error")
        form = await request.post()
        if form.get("api_key") != self.api_key or form.get("api_secret") != self.api_secret:
            return _reply([{"status": "4", "error-text": "Bad Credentials"}])
        if self.behaviour in REFUSALS:
            status, text = REFUSALS[self.behaviour]
            return _reply([{"status": status, "error-text": text}])
        per_part = 67 if form.get("type") == "unicode" else 153
        count = 1 if len(form["text"]) <= per_part + 7 else math.ceil(len(form["text"]) / per_part)
        parts = [{
            "to": form["to"],
            "message-id": uuid.uuid4().hex[:16].upper(),
            "status": "0",
            "remaining-balance": "10.00000000",
            "message-price": "0.03330000",
            "network": "23410",
            "client-ref": form.get("client-ref", ""),
        } for _ in range(count)]
        self.accepted.append(({k: str(v) for k, v in form.items()}, parts))
        if self.send_dlrs and form.get("callback"):
            self._schedule_dlrs({k: str(v) for k, v in form.items()}, parts)
        return _reply(parts)


def _reply(messages: list[dict]) -> web.Response:
    return web.json_response({"message-count": str(len(messages)), "messages": messages})
