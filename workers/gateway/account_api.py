"""The account's own side of a suspension: POST /v1/account/review-request {"reason": "..."}."""
from __future__ import annotations

from aiohttp import web

from router.errors import ValidationError
from workers import suspensions
from workers.gateway.auth import authenticate
from workers.gateway.errors import json_response
from workers.gateway.messages import read_json
from workers.gateway.state import APP

MAX_REASON_CHARS = 2000


async def review_request(request: web.Request) -> web.Response:
    state = request.app[APP]
    account = await authenticate(request, state.accounts, allow_suspended=True)
    payload = await read_json(request)
    reason = payload.get("reason") if isinstance(payload, dict) else None
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON_CHARS:
        raise ValidationError("invalid_request", f"reason must be 1 to {MAX_REASON_CHARS} characters", "reason")
    fresh = await state.store.get_account(account["id"])  # not the cached copy: the status matters here
    await suspensions.request_review(state.store, state.settings, fresh, reason.strip(), publisher=state.publisher)
    return json_response({"account_id": account["id"], "status": "review_requested"}, 202)
