"""A carrier's `rate_limit` across all dispatch processes, without a shared store.

Each process paces itself at rate / (number of consumers on the carrier's queue), and
re-reads that number every few seconds, so N processes together stay under the limit.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

WINDOW_SECONDS = 1.02  # a little over a second, for network jitter
SENDER_WINDOW_SECONDS = 1.1


def share(total: float, processes: int) -> float:
    """One process's pace so that `processes` of them never exceed `total` in any one-second window.

    A pacer at r/s can fit floor(r) + 1 sends into a one-second window (both ends), so each
    process gets one send less than its share, and 2 % more room for network jitter. Rates of
    a couple of messages a second or less (a long-code number) keep 95 % of their share.
    """
    each = total / max(1, processes)
    return (each - 1) * 0.98 if each > 2 else each * 0.95


class Pacer:
    """Spaces sends at least 1/rate seconds apart (no bursts: carriers count per second)."""

    def __init__(self, rate: float):
        self.rate = rate
        self._next = time.monotonic()
        self._lock = asyncio.Lock()

    def reserve(self, max_wait: float) -> float | None:
        """Take the next send slot if it comes within `max_wait` seconds; returns the wait, or None."""
        now = time.monotonic()
        wait = max(0.0, self._next - now)
        if wait > max_wait:
            return None
        self._next = max(self._next, now) + 1.0 / self.rate
        return wait

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
                now = time.monotonic()
            self._next = max(self._next, now) + 1.0 / self.rate


class Window:
    """At most floor(rate) sends in any sliding second: the last guard right before a send, so a
    stall between pacing and sending (a slow store write) cannot bunch sends into a burst."""

    def __init__(self, rate: float, seconds: float = WINDOW_SECONDS):
        self.rate = rate
        self.seconds = seconds
        self._sent: deque[float] = deque()

    async def admit(self) -> None:
        limit = max(1, int(self.rate))
        while True:
            now = time.monotonic()
            while self._sent and now - self._sent[0] >= self.seconds:
                self._sent.popleft()
            if len(self._sent) < limit:
                self._sent.append(now)
                return
            await asyncio.sleep(self.seconds - (now - self._sent[0]))


class SharedPacer:
    def __init__(self, rate: float, queue_name: str):
        self.total = rate
        self.queue_name = queue_name
        self.pacer = Pacer(share(rate, 1))
        self.window = Window(share(rate, 1))

    async def wait(self) -> None:
        await self.pacer.wait()

    async def admit(self) -> None:
        await self.window.admit()

    async def watch(self, channel, stop: asyncio.Event, every: float = 1.0) -> None:
        await asyncio.sleep(0.2)  # let this process's own consumer attach first
        while not stop.is_set():
            with contextlib.suppress(Exception):
                from workers.amqp import queue_counts
                consumers = max(1, (await queue_counts(channel, self.queue_name))[1])
                self.pacer.rate = self.window.rate = share(self.total, consumers)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), every)


class SenderPacers:
    """One pacer per pool sender (its own `rate_limit`), shared out among dispatch processes,
    and a sliding-window guard right before each send (a stall between the slot and the send
    must not bunch sends into a burst the carrier counts against the sender)."""

    def __init__(self):
        self._pacers: dict[str, Pacer] = {}
        self._windows: dict[str, Window] = {}
        self.processes = 1

    def reserve(self, sender: str, rate: float, max_wait: float) -> float | None:
        pacer = self._pacers.get(sender)
        pace = share(rate, self.processes)
        if pacer is None:
            pacer = self._pacers[sender] = Pacer(pace)
        pacer.rate = pace
        return pacer.reserve(max_wait)

    async def admit(self, sender: str, rate: float) -> None:
        window = self._windows.get(sender)
        if window is None:
            # a sender's rate is a few a second at most, so one send's network jitter is a large
            # share of its gap: a tenth of a second of margin keeps the carrier's count under it
            window = self._windows[sender] = Window(rate, seconds=SENDER_WINDOW_SECONDS)
        window.rate = rate / max(1, self.processes)
        await window.admit()
