"""Data-subject requests over HTTP, scoped to the caller's account (allowed while suspended):
GET /v1/privacy/export?to=ADDRESS and POST /v1/privacy/erase {"to": ADDRESS}."""
from __future__ import annotations

from aiohttp import web

from router.errors import ValidationError
from workers import privacy
from workers.gateway.auth import authenticate
from workers.gateway.errors import json_response
from workers.gateway.messages import read_json
from workers.gateway.state import APP


async def export(request: web.Request) -> web.Response:
    state = request.app[APP]
    account = await authenticate(request, state.accounts, allow_suspended=True)
    if "to" not in request.query:
        raise ValidationError("invalid_request", "give the address as ?to=", "to")
    return json_response(await privacy.export(state.store, account["id"], request.query["to"]))


async def erase(request: web.Request) -> web.Response:
    state = request.app[APP]
    account = await authenticate(request, state.accounts, allow_suspended=True)
    payload = await read_json(request)
    if not isinstance(payload, dict):
        raise ValidationError("invalid_request", 'body must be {"to": ADDRESS}', "to")
    return json_response(await privacy.erase(state.store, state.settings, account["id"], payload.get("to")))
