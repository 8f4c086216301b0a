"""Sender pools and suppression lists by API: /v1/senders and /v1/suppressions."""
from __future__ import annotations

from aiohttp import web

from router.errors import ValidationError
from router.senders import CHANNELS, normalise_address, validate_sender
from workers.gateway.auth import authenticate
from workers.gateway.errors import error_response, json_response
from workers.gateway.messages import read_json
from workers.gateway.state import APP
from workers.store import senders, suppressions

def _channel(body: dict) -> str:
    channel = body.get("channel")
    if channel not in CHANNELS:
        raise ValidationError("unknown_channel", "channel must be sms, email or push", "channel")
    return channel


async def add_sender(request: web.Request) -> web.Response:
    state = request.app[APP]
    account = await authenticate(request, state.accounts)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationError("invalid_request", "body must be a JSON object")
    unknown = set(body) - {"channel", "address", "country", "rate_limit"}
    if unknown:
        raise ValidationError("invalid_request", f"{sorted(unknown)[0]}: unknown field", sorted(unknown)[0])
    channel, address, country, rate = validate_sender(body.get("channel"), body.get("address"), body.get("country"),
                                                      body.get("rate_limit"))
    sender = await senders.add(state.store, account["id"], channel, address, country, rate)
    state.sender_pools.forget(account["id"])
    return json_response(_sender(sender), 201)


async def list_senders(request: web.Request) -> web.Response:
    state = request.app[APP]
    account = await authenticate(request, state.accounts, allow_suspended=True)
    return json_response({"data": [_sender(s) for s in await senders.listing(state.store, account["id"])]})


async def remove_sender(request: web.Request) -> web.Response:
    state = request.app[APP]
    account = await authenticate(request, state.accounts, allow_suspended=True)
    if not await senders.remove(state.store, account["id"], request.match_info["id"]):
        return error_response(404, "not_found", "no such sender")
    state.sender_pools.forget(account["id"])
    return web.Response(status=204)


def _sender(row: dict) -> dict:
    return {k: row[k] for k in ("id", "channel", "address", "country", "rate_limit", "created_at")}


async def list_suppressions(request: web.Request) -> web.Response:
    state = request.app[APP]
    account = await authenticate(request, state.accounts, allow_suspended=True)
    return json_response({"data": await suppressions.listing(state.store, account["id"])})


async def add_suppression(request: web.Request) -> web.Response:
    state = request.app[APP]
    account = await authenticate(request, state.accounts, allow_suspended=True)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationError("invalid_request", "body must be a JSON object")
    channel = _channel(body)
    address = normalise_address(channel, body.get("address"))
    await suppressions.add(state.store, [(account["id"], channel, address, "api")])
    return json_response({"channel": channel, "address": address, "reason": "api"}, 201)


async def remove_suppression(request: web.Request) -> web.Response:
    state = request.app[APP]
    account = await authenticate(request, state.accounts, allow_suspended=True)
    channel = request.query.get("channel")
    if channel is not None and channel not in CHANNELS:
        raise ValidationError("unknown_channel", "channel must be sms, email or push", "channel")
    removed = await suppressions.remove(state.store, account["id"], channel, request.match_info["address"])
    if not removed:
        return error_response(404, "not_found", "that address is not suppressed")
    return web.Response(status=204)
