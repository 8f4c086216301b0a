"""Fake Twilio Programmable Messaging API, and Twilio's side of status callbacks."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from tests.carriers.fakes.http import FakeHttpCarrier

ERRORS = {  # behaviour -> (HTTP status, Twilio code, message, extra headers)
    "server_error": (500, 20500, "Internal Server Error", {}),
    "rate_limited": (429, 20429, "Too Many Requests", {"Retry-After": "2"}),
    "invalid_number": (400, 21211, "The 'To' number +1555 is not a valid phone number.", {}),
    "opted_out": (400, 21610, "Attempt to send to unsubscribed recipient", {}),
}


def sign_callback(auth_token: str, url: str, params: dict[str, str]) -> str:
    """X-Twilio-Signature as Twilio computes it for a form POST to `url`."""
    data = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


@dataclass(frozen=True)
class Accepted:
    """A message the fake took (answered 201 for)."""

    sid: str
    form: dict[str, str]


@dataclass(frozen=True)
class Callback:
    """A status callback the fake sent: where, what, and how the receiver answered (0: no answer)."""

    url: str
    params: dict[str, str]
    status: int


class FakeTwilio(FakeHttpCarrier):
    """Behaviours: happy, server_error, rate_limited, invalid_number, opted_out, slow.

    With `callbacks=True` it also does what real Twilio does after taking a message: after
    `callback_delay` seconds it POSTs a status callback (form: MessageSid, MessageStatus =
    `callback_status`, AccountSid, From, To) to the message's StatusCallback URL, signed in
    X-Twilio-Signature with the auth token; a 5xx or a connection failure is retried a few
    times. `accepted` lists the messages it took, `callbacks` the callbacks it sent.
    """

    def __init__(self, behaviour: str = "happy", account_sid: str = "AC123", auth_token: str = "token",
                 callbacks: bool = False, callback_delay: float = 0.2, callback_status: str = "delivered"):
        super().__init__(behaviour)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.send_callbacks = callbacks
        self.callback_delay = callback_delay
        self.callback_status = callback_status
        self.accepted: list[Accepted] = []
        self.callbacks: list[Callback] = []
        self._callback_http: aiohttp.ClientSession | None = None
        self._pending: set[asyncio.Task] = set()

    def routes(self):
        return [web.post("/2010-04-01/Accounts/{sid}/Messages.json", self._create_message)]

    async def __aenter__(self):
        if self.send_callbacks:
            self._callback_http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return await super().__aenter__()

    async def __aexit__(self, *exc):
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await super().__aexit__(*exc)
        if self._callback_http is not None:
            await self._callback_http.close()

    async def callbacks_settled(self, timeout: float = 30) -> None:
        """Wait until every scheduled status callback has been sent (or given up)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)

    def _schedule_callback(self, url: str, params: dict[str, str]) -> None:
        task = asyncio.get_running_loop().create_task(self._send_callback(url, params))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send_callback(self, url: str, params: dict[str, str]) -> None:
        await asyncio.sleep(self.callback_delay)
        headers = {"X-Twilio-Signature": sign_callback(self.auth_token, url, params)}
        status = 0
        for pause in (0.5, 1, 2, 4, 0):
            try:
                async with self._callback_http.post(url, data=params, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, OSError):
                status = 0
            if 0 < status < 500 or not pause:
                break
            await asyncio.sleep(pause)
        self.callbacks.append(Callback(url, params, status))

    async def _create_message(self, request: web.Request) -> web.Response:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if (request.match_info["sid"] != self.account_sid
                or request.headers.get("Authorization") != f"Basic {expected}"):
            return _error(401, 20003, "Authenticate", {})
        if self.behaviour == "slow":
            await self.closing.wait()
        if self.behaviour in ERRORS:
            return _error(*ERRORS[self.behaviour])
        form = await request.post()
        sid = "SM" + uuid.uuid4().hex
        self.accepted.append(Accepted(sid, {k: str(v) for k, v in form.items()}))
        if self.send_callbacks and form.get("StatusCallback"):
            self._schedule_callback(str(form["StatusCallback"]), {
                "MessageSid": sid, "SmsSid": sid, "MessageStatus": self.callback_status,
                "SmsStatus": self.callback_status, "AccountSid": self.account_sid,
                "From": str(form["From"]), "To": str(form["To"]), "ApiVersion": "2010-04-01"})
        return web.json_response(status=201, data={
            "sid": sid,
            "account_sid": self.account_sid,
            "to": form["To"],
            "from": form["From"],
            "body": form["Body"],
            "status": "queued",
            "num_segments": "2" if len(form["Body"]) > 160 else "1",
            "price": None,
            "price_unit": "USD",
            "error_code": None,
        })


def _error(status: int, code: int, message: str, headers: dict) -> web.Response:
    return web.json_response(status=status, headers=headers, data={
        "code": code, "message": message, "status": status,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
    })
