"""A steady stream of single-message POSTs that records every answer, for tests that break
something underneath the gateway while it is taking traffic."""
from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import aiohttp
import orjson


@dataclass(frozen=True)
class Answer:
    started: float  # time.monotonic()
    ended: float
    status: int  # 0: no HTTP answer at all (connection error or client timeout)
    message_id: str | None
    retry_after: str | None
    body: str
    n: int = -1  # which message ("load {n}", Idempotency-Key "load-{n}")

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Load:
    """`senders` concurrent clients, each POSTing one message after another until stopped."""

    http: aiohttp.ClientSession
    base_url: str
    api_key: str
    senders: int = 6
    pause: float = 0.0
    request_timeout: float = 30.0
    message: dict = field(default_factory=lambda: {"channel": "sms", "to": "+447911123456"})
    answers: list[Answer] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list = field(default_factory=list)
    _counter: itertools.count = field(default_factory=itertools.count)

    def start(self) -> Load:
        self._tasks = [asyncio.create_task(self._sender()) for _ in range(self.senders)]
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _sender(self) -> None:
        while not self._stop.is_set():
            answer = await self.send(next(self._counter))
            self.answers.append(answer)
            if answer.status != 202:
                await asyncio.sleep(0.2)  # as a client would back off a little
            elif self.pause:
                await asyncio.sleep(self.pause)

    async def send(self, n: int) -> Answer:
        """POST message n once (its body and Idempotency-Key are fixed by n)."""
        headers = {"Authorization": f"Bearer {self.api_key}", "Idempotency-Key": f"load-{n}"}
        started = time.monotonic()
        status, message_id, retry_after, text = 0, None, None, ""
        try:
            async with self.http.post(f"{self.base_url}/v1/messages", json={**self.message, "body": f"load {n}"},
                                      headers=headers, timeout=aiohttp.ClientTimeout(total=self.request_timeout)) \
                    as resp:
                status, retry_after = resp.status, resp.headers.get("Retry-After")
                text = await resp.text()
                if status == 202:
                    message_id = orjson.loads(text)["id"]
        except (aiohttp.ClientError, TimeoutError) as exc:
            text = f"{type(exc).__name__}: {exc}"
        return Answer(started, time.monotonic(), status, message_id, retry_after, text[:300], n)

    async def retry_refused(self, attempts: int = 30) -> list[Answer]:
        """Do what SPEC §4 tells a client to do with a 503: retry with the same Idempotency-Key.
        Returns the final answer for every message that never got a 202."""
        got = {a.n for a in self.answers if a.status == 202}
        todo = sorted({a.n for a in self.answers if a.status != 202} - got)
        final: list[Answer] = []
        for n in todo:
            for _ in range(attempts):
                answer = await self.send(n)
                if answer.status == 202:
                    break
                await asyncio.sleep(0.5)
            self.answers.append(answer)
            final.append(answer)
        return final

    # --- views ----------------------------------------------------------------------------

    def accepted(self) -> list[str]:
        return list(dict.fromkeys(a.message_id for a in self.answers if a.status == 202))

    def within(self, start: float, end: float) -> list[Answer]:
        """Answers to requests made entirely inside [start, end]."""
        return [a for a in self.answers if a.started >= start and a.ended <= end]

    def after(self, start: float) -> list[Answer]:
        return [a for a in self.answers if a.started >= start]

    @staticmethod
    def summary(answers: list[Answer]) -> dict:
        by_status: dict[int, int] = {}
        for a in answers:
            by_status[a.status] = by_status.get(a.status, 0) + 1
        slowest = max((a.seconds for a in answers), default=0.0)
        return {"requests": len(answers), "by_status": by_status, "slowest_s": round(slowest, 2)}
