"""Carrier webhooks: delivery receipts (POST or GET) at /webhooks/dlr/{carrier}.

A receipt is checked with the carrier's own signature scheme, then published raw (and
confirmed) before the carrier gets its 200, so a parser bug dead-letters it for replay
instead of losing it.
"""
from __future__ import annotations

import base64
import logging

import orjson
from aiohttp import web

from carriers.base import InboundRequest
from router import clock, topology
from workers.amqp import PublishFailed
from workers.gateway.errors import error_response
from workers.gateway.state import APP

log = logging.getLogger("msgroute.gateway")


async def to_inbound(request: web.Request, public_url: str) -> InboundRequest:
    body = await request.read()
    return InboundRequest(
        method=request.method,
        url=public_url.rstrip("/") + request.path_qs,
        headers={_text(k).lower(): _text(v) for k, v in request.headers.items()},
        body=body,
        query=tuple((_text(k), _text(v)) for k, v in request.query.items()),
    )


def _text(value: str) -> str:
    """Bytes that were not UTF-8 reach us as lone surrogates, which cannot be queued as JSON:
    they become U+FFFD (no signature or field we read can contain them anyway)."""
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def encode_inbound(carrier: str, inbound: InboundRequest, kind: str) -> bytes:
    return orjson.dumps({
        "kind": kind, "carrier": carrier, "method": inbound.method, "url": inbound.url,
        "headers": inbound.headers, "body": base64.b64encode(inbound.body).decode(),
        "query": inbound.query, "received_at": clock.now_iso(),
    })


def decode_inbound(body: bytes) -> tuple[str, str, InboundRequest, str]:
    data = orjson.loads(body)
    inbound = InboundRequest(method=data["method"], url=data["url"], headers=data["headers"],
                             body=base64.b64decode(data["body"]), query=tuple(tuple(q) for q in data["query"]))
    return data["kind"], data["carrier"], inbound, data["received_at"]


async def receipt(request: web.Request) -> web.Response:
    state = request.app[APP]
    carrier = request.match_info["carrier"]
    adapter = state.adapters.get(carrier)
    if adapter is None:
        return error_response(404, "not_found", f"no carrier named {carrier!r}")
    inbound = await to_inbound(request, state.settings.gateway.public_url)
    if not adapter.verify_receipt(inbound):
        log.warning("receipt signature check failed", extra={"carrier": carrier})
        return error_response(403, "invalid_signature", "the receipt's signature does not verify")
    try:
        await state.publisher.publish("", topology.RECEIPTS_QUEUE, encode_inbound(carrier, inbound, "receipt"))
    except PublishFailed:
        return error_response(503, "unavailable", "try again later", headers={"Retry-After": "5"})
    return web.Response(status=200, text="")


async def inbound(request: web.Request) -> web.Response:
    """POST /webhooks/inbound/{carrier}: messages recipients send to our numbers (opt-outs among them)."""
    state = request.app[APP]
    carrier = request.match_info["carrier"]
    adapter = state.adapters.get(carrier)
    if adapter is None or not hasattr(adapter, "parse_inbound"):
        return error_response(404, "not_found", f"no carrier named {carrier!r} takes inbound messages")
    message = await to_inbound(request, state.settings.gateway.public_url)
    if not adapter.verify_receipt(message):
        log.warning("inbound signature check failed", extra={"carrier": carrier})
        return error_response(403, "invalid_signature", "the request's signature does not verify")
    try:
        await state.publisher.publish("", topology.RECEIPTS_QUEUE, encode_inbound(carrier, message, "inbound"))
    except PublishFailed:
        return error_response(503, "unavailable", "try again later", headers={"Retry-After": "5"})
    return web.Response(status=200, text="<Response></Response>", content_type="text/xml")
