"""A lean HTTP/1.1 load generator: prebuilt request bytes over keep-alive connections.

Lean so that on a two-core machine the client takes as little CPU as possible from the
server it measures (an aiohttp client costs several times more per request).

- `closed_loop`: `concurrency` connections, each sending its next request as soon as the
  previous answer arrived; gives peak requests/s.
- `open_loop`: requests scheduled at a fixed rate whatever the answers do; a request's
  latency is counted from its scheduled time, so a stall shows up in the percentiles
  instead of silently lowering the offered load.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Sequence

import orjson


def post(path: str, body: dict, port: int, headers: dict[str, str] | None = None) -> bytes:
    """One POST request, as bytes, with a JSON body."""
    data = orjson.dumps(body)
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
             f"Content-Length: {len(data)}"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "Connection":
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


@dataclass
class Result:
    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds, one per request
    bodies: list[bytes] = field(default_factory=list)
    retried: int = 0  # 503 answers that were sent again

    @property
    def count(self) -> int:
        return sum(self.statuses.values())

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else float("nan")


async def closed_loop(port: int, requests: Sequence[bytes], concurrency: int, keep_bodies: bool = False,
                      retry_unavailable: bool = False) -> Result:
    """Send every request once over `concurrency` connections; returns when all are answered.

    With `retry_unavailable`, a 503 (the broker did not confirm in time) is sent again after
    a short pause, as a client would; `Result.retried` counts them.
    """
    connections = [await Connection.open(port) for _ in range(concurrency)]
    result = Result(0.0)
    next_index = iter(range(len(requests)))

    async def worker(conn: Connection) -> None:
        for i in next_index:
            sent = time.perf_counter()
            status, body = await conn.send(requests[i])
            while status == 503 and retry_unavailable:
                result.retried += 1
                await asyncio.sleep(0.5)
                status, body = await conn.send(requests[i])
            result.latencies.append(time.perf_counter() - sent)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if keep_bodies:
                result.bodies.append(body)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    result.seconds = time.perf_counter() - started
    for conn in connections:
        conn.close()
    return result


async def open_loop(port: int, requests: Sequence[bytes], rate: float, seconds: float,
                    connections: int = 64, tick: float = 0.002) -> Result:
    """Offer `rate` requests/s for `seconds`, cycling through `requests`."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    opened = [await Connection.open(port) for _ in range(connections)]
    for conn in opened:
        idle.put_nowait(conn)
    result = Result(seconds)
    tasks: set[asyncio.Task] = set()

    async def one(request: bytes, scheduled: float) -> None:
        conn = await idle.get()
        status, _ = await conn.send(request)
        result.latencies.append(time.perf_counter() - scheduled)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        idle.put_nowait(conn)

    total = int(rate * seconds)
    started = time.perf_counter()
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - started) * rate) + 1)
        while sent < due:
            task = asyncio.create_task(one(requests[sent % len(requests)], started + sent / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(tick)
    if tasks:
        await asyncio.wait(tasks)
    result.seconds = time.perf_counter() - started
    for conn in opened:
        conn.close()
    return result
