"""A small TCP fault proxy (Toxiproxy's ideas, in one file) for the fault-injection tests.

    proxy = FaultProxy(upstream_port=5672).start()   # listens on 127.0.0.1:proxy.port
    proxy.set_mode("latency", latency=0.2)          # every chunk, both ways, 200 ms late
    proxy.set_mode("blackhole")                     # nothing passes either way; nobody is told
    proxy.set_mode("reset")                         # every connection reset (RST), new ones too
    proxy.set_mode("lose_reply")                    # requests reach upstream, replies are dropped and
                                                    # the client's connection is reset
    proxy.set_mode("pass")
    proxy.set_mode("blackhole", label="msgroute worker route")   # only that AMQP connection
    proxy.stop()

It runs its own event loop in a thread, so a test may block (stop a broker, sleep) without
stalling it. AMQP connections are labelled with the `connection_name` their client sends in
Connection.StartOk (the engine names every connection), so a fault can target one process's
consuming connection. Every connection is recorded (`connections`): when it opened, its
label, and when and how it ended — a client that notices a dead peer closes its socket,
and `closed_at` says when.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Self

MODES = ("pass", "latency", "blackhole", "reset", "lose_reply")
_NAME_FIELD = b"\x0fconnection_nameS"


@dataclass
class Connection:
    number: int
    opened_at: float
    label: str | None = None
    closed_at: float | None = None
    closed_by: str | None = None  # client | upstream | proxy
    bytes_up: int = 0
    bytes_down: int = 0
    dropped_up: int = 0
    dropped_down: int = 0
    _sniff: bytes = b""
    _transports: list = field(default_factory=list)

    def _learn_label(self, data: bytes) -> None:
        if self.label is not None or len(self._sniff) > 8192:
            return
        self._sniff += data
        at = self._sniff.find(_NAME_FIELD)
        if at < 0:
            return
        start = at + len(_NAME_FIELD)
        if len(self._sniff) < start + 4:
            return
        (length,) = struct.unpack(">I", self._sniff[start:start + 4])
        if len(self._sniff) >= start + 4 + length:
            self.label = self._sniff[start + 4:start + 4 + length].decode(errors="replace")


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Close with a TCP reset, not a FIN."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.mode = "pass"
        self.latency = 0.0
        self.rules: dict[str, str] = {}  # connection label -> mode (overrides `mode`)
        self.connections: list[Connection] = []
        self._live: dict[int, tuple[Connection, list]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    # --- control (from any thread) ------------------------------------------------------

    def start(self) -> Self:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def set_mode(self, mode: str, *, latency: float | None = None, label: str | None = None) -> float:
        """Change the fault for every connection (or those labelled `label`); returns when (monotonic)."""
        assert mode in MODES, mode
        if latency is not None:
            self.latency = latency
        if label is None:
            self.mode = mode
            self.rules.clear()
        else:
            self.rules[label] = mode
        at = time.monotonic()
        self._loop.call_soon_threadsafe(self._apply_resets)
        return at

    def url(self, amqp_url: str) -> str:
        """`amqp_url` with its host and port replaced by this proxy's."""
        scheme, rest = amqp_url.split("://", 1)
        creds, _, hostpath = rest.rpartition("@")
        path = hostpath.split("/", 1)[1] if "/" in hostpath else ""
        return f"{scheme}://{creds + '@' if creds else ''}127.0.0.1:{self.port}/{path}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def live(self, label: str | None = None) -> list[Connection]:
        return [c for c in self.connections if c.closed_at is None and (label is None or c.label == label)]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- inside the proxy's loop ------------------------------------------------------

    def _call(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self._server.close()
        for conn, writers in list(self._live.values()):
            for writer in writers:
                _rst(writer)
            self._closed(conn, "proxy")

    def _mode_for(self, conn: Connection) -> str:
        if conn.label is not None and conn.label in self.rules:
            return self.rules[conn.label]
        return self.mode

    def _apply_resets(self) -> None:
        for conn, writers in list(self._live.values()):
            if self._mode_for(conn) == "reset":
                for writer in writers:
                    _rst(writer)
                self._closed(conn, "proxy")

    def _closed(self, conn: Connection, by: str) -> None:
        if conn.closed_at is None:
            conn.closed_at = time.monotonic()
            conn.closed_by = by
        self._live.pop(conn.number, None)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        conn = Connection(number=len(self.connections), opened_at=time.monotonic())
        self.connections.append(conn)
        writers: list = [client_writer]
        self._live[conn.number] = (conn, writers)
        mode = self._mode_for(conn)
        if mode == "reset":
            _rst(client_writer)
            self._closed(conn, "proxy")
            return
        if mode == "blackhole":  # like a dropped SYN-ACK path: the client hears nothing
            await self._swallow(conn, client_reader)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(asyncio.open_connection(*self.upstream), 10)
        except (OSError, TimeoutError):
            _rst(client_writer)
            self._closed(conn, "upstream")
            return
        writers.append(upstream_writer)
        if conn.closed_at is not None:  # reset while connecting
            _rst(upstream_writer)
            return
        up = asyncio.create_task(self._pump(conn, client_reader, upstream_writer, client_writer, "up"))
        down = asyncio.create_task(self._pump(conn, upstream_reader, client_writer, upstream_writer, "down"))
        await asyncio.gather(up, down, return_exceptions=True)
        for writer in writers:
            with contextlib.suppress(Exception):
                writer.close()

    async def _swallow(self, conn: Connection, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(65536):
                conn.dropped_up += len(data)
        except (OSError, asyncio.IncompleteReadError):
            pass
        self._closed(conn, "client")

    async def _pump(self, conn: Connection, reader, writer, other, direction: str) -> None:
        """Copy one direction, applying the connection's current mode chunk by chunk."""
        pending: asyncio.Queue = asyncio.Queue()
        sender = asyncio.create_task(self._send_later(conn, pending, writer, other))
        propagate_eof = False
        try:
            while True:
                try:
                    data = await reader.read(65536)
                except (OSError, asyncio.IncompleteReadError):
                    data = b""
                if not data:
                    mode = self._mode_for(conn)
                    if mode != "blackhole":  # a black hole passes no FIN either
                        propagate_eof = True
                        self._closed(conn, "client" if direction == "up" else "upstream")
                    elif direction == "up":
                        self._closed(conn, "client")  # the client gave up on the dead peer
                        _rst(writer)
                    return
                if direction == "up":
                    conn._learn_label(data)
                mode = self._mode_for(conn)
                if mode == "blackhole" or (mode == "lose_reply" and direction == "down"):
                    if direction == "up":
                        conn.dropped_up += len(data)
                    else:
                        conn.dropped_down += len(data)
                    if mode == "lose_reply":  # the reply is gone: so is the connection
                        _rst(writer)
                        _rst(other)
                        self._closed(conn, "proxy")
                        return
                    continue
                if mode == "reset":
                    _rst(writer)
                    _rst(other)
                    self._closed(conn, "proxy")
                    return
                if direction == "up":
                    conn.bytes_up += len(data)
                else:
                    conn.bytes_down += len(data)
                delay = self.latency if mode == "latency" else 0.0
                await pending.put((time.monotonic() + delay, data))
        finally:
            if not sender.done():
                if propagate_eof:  # deliver what is queued (latency), then the FIN
                    await pending.put((0.0, None))
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(sender, 30)
                else:
                    sender.cancel()

    @staticmethod
    async def _send_later(conn: Connection, pending: asyncio.Queue, writer, other) -> None:
        while True:
            due, data = await pending.get()
            if data is None:
                with contextlib.suppress(Exception):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                writer.write(data)
                await writer.drain()
            except (OSError, ConnectionError, RuntimeError):
                _rst(other)
                return
