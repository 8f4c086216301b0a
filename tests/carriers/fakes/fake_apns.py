"""A fake APNs: an HTTP/2-only server (the `h2` library over asyncio, cleartext with prior
knowledge) on 127.0.0.1, ephemeral port. A client that falls back to HTTP/1.1 gets a
protocol error, as from the real service.

Every request's ES256 provider token is verified with the public key (header `kid`,
claim `iss` = team id); the topic, push type and apns-id are checked like APNs does. The
outcome depends on the device token's prefix:

| prefix          | reply                                      |
|-----------------|--------------------------------------------|
| `unregistered`  | 410 `{"reason": "Unregistered", "timestamp"}` |
| `baddevice`     | 400 BadDeviceToken                         |
| `othertopic`    | 400 DeviceTokenNotForTopic                 |
| `throttled`     | 429 TooManyRequests                        |
| `internal`      | 500 InternalServerError                    |
| `unavailable`   | 503 ServiceUnavailable, Retry-After: 5     |
| anything else   | 200 with the apns-id header                |
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import jwt


@dataclass
class ApnsRequest:
    method: str
    path: str
    headers: dict[str, str]  # regular headers (pseudo-headers in method/path)
    body: bytes
    jwt_header: dict[str, Any] | None = None  # the verified provider token, when it verified
    jwt_claims: dict[str, Any] | None = None

    @property
    def bearer(self) -> str:
        return self.headers.get("authorization", "").removeprefix("bearer ")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeApns:
    public_key: Any  # the .p8 key's EC public key
    team_id: str
    key_id: str
    topic: str
    requests: list[ApnsRequest] = field(default_factory=list)
    expired_tokens: set[str] = field(default_factory=set)  # provider tokens answered ExpiredProviderToken
    connections: int = 0
    url: str = ""

    def __post_init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.Transport] = set()

    async def __aenter__(self) -> FakeApns:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _H2Protocol(self), "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for transport in list(self._transports):
            transport.close()
        await self._server.wait_closed()

    @property
    def bearers(self) -> list[str]:
        """Distinct provider tokens seen, in order of first use."""
        return list(dict.fromkeys(r.bearer for r in self.requests))

    def handle(self, request: ApnsRequest) -> tuple[int, dict[str, str], dict | None] | None:
        """(status, response headers, JSON body or None) for one request, recording it; None: no reply."""
        self.requests.append(request)
        apns_id = request.headers.get("apns-id") or str(uuid.uuid4()).upper()
        headers = {"apns-id": apns_id}
        if request.method != "POST":
            return 405, headers, {"reason": "MethodNotAllowed"}
        if not request.path.startswith("/3/device/"):
            return 404, headers, {"reason": "BadPath"}
        try:
            uuid.UUID(apns_id)
        except ValueError:
            return 400, headers, {"reason": "BadMessageId"}
        if not request.bearer:
            return 403, headers, {"reason": "MissingProviderToken"}
        try:
            request.jwt_header = jwt.get_unverified_header(request.bearer)
            if request.jwt_header.get("kid") != self.key_id:
                raise jwt.InvalidTokenError(f"kid {request.jwt_header.get('kid')!r}")
            request.jwt_claims = jwt.decode(request.bearer, self.public_key, algorithms=["ES256"],
                                            options={"require": ["iss", "iat"]}, issuer=self.team_id)
        except jwt.PyJWTError:
            return 403, headers, {"reason": "InvalidProviderToken"}
        if request.bearer in self.expired_tokens:
            return 403, headers, {"reason": "ExpiredProviderToken"}
        if request.headers.get("apns-topic") != self.topic:
            return 400, headers, {"reason": "TopicDisallowed"}
        if request.headers.get("apns-push-type") not in ("alert", "background"):
            return 400, headers, {"reason": "InvalidPushType"}
        try:
            if not isinstance(request.json().get("aps"), dict):
                raise ValueError("no aps")
        except (ValueError, AttributeError):
            return 400, headers, {"reason": "PayloadEmpty"}
        device = request.path.removeprefix("/3/device/")
        if device.startswith("unregistered"):
            return 410, headers, {"reason": "Unregistered", "timestamp": int(time.time() * 1000)}
        if device.startswith("baddevice"):
            return 400, headers, {"reason": "BadDeviceToken"}
        if device.startswith("othertopic"):
            return 400, headers, {"reason": "DeviceTokenNotForTopic"}
        if device.startswith("throttled"):
            return 429, headers, {"reason": "TooManyRequests"}
        if device.startswith("internal"):
            return 500, headers, {"reason": "InternalServerError"}
        if device.startswith("unavailable"):
            return 503, {**headers, "retry-after": "5"}, {"reason": "ServiceUnavailable"}
        if device.startswith("silent"):  # took the push; its reply never comes
            return None
        return 200, headers, None


class _H2Protocol(asyncio.Protocol):
    """One HTTP/2 server connection: collects each stream, answers it when it ends."""

    def __init__(self, fake: FakeApns):
        self.fake = fake
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.fake.connections += 1
        self.fake._transports.add(transport)
        self.conn.initiate_connection()
        self.transport.write(self.conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.fake._transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:  # e.g. an HTTP/1.1 request
            self.transport.write(self.conn.data_to_send())
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.streams[event.stream_id] = (dict(event.headers), bytearray())
            elif isinstance(event, h2.events.DataReceived):
                self.streams[event.stream_id][1].extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self._respond(event.stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.transport.close()
        self.transport.write(self.conn.data_to_send())

    def _respond(self, stream_id: int) -> None:
        headers, body = self.streams.pop(stream_id)
        request = ApnsRequest(method=headers.get(":method", ""), path=headers.get(":path", ""),
                              headers={k: v for k, v in headers.items() if not k.startswith(":")},
                              body=bytes(body))
        answer = self.fake.handle(request)
        if answer is None:
            return
        status, response_headers, reply = answer
        data = json.dumps(reply).encode() if reply is not None else b""
        self.conn.send_headers(stream_id, [(":status", str(status)), *response_headers.items(),
                                           *([("content-type", "application/json")] if data else [])],
                               end_stream=not data)
        if data:
            self.conn.send_data(stream_id, data, end_stream=True)
