"""The admin API under /admin, with its own token (`Authorization: Bearer $MSGROUTE_ADMIN_TOKEN`;
with no token configured it refuses everything): accounts, suspensions, reviews, key rotation."""
from __future__ import annotations

import hmac

from aiohttp import web

from router.errors import ValidationError
from workers import suspensions
from workers.account_view import public_account
from workers.gateway.auth import bearer
from workers.gateway.errors import json_response
from workers.gateway.messages import read_json
from workers.gateway.state import APP
from workers.store import account_events

DEFAULT_GRACE_SECONDS = 86400.0
MAX_GRACE_SECONDS = 30 * 86400.0


def _authorise(request: web.Request) -> None:
    token = request.app[APP].settings.admin_token
    if not token:
        raise ValidationError("forbidden", "the admin API is disabled: set MSGROUTE_ADMIN_TOKEN", status=403)
    if not hmac.compare_digest(bearer(request).encode(), token.encode()):
        raise ValidationError("unauthorized", "wrong admin token", status=401)


async def _account(request: web.Request) -> dict:
    _authorise(request)
    account = await request.app[APP].store.get_account(request.match_info["id"])
    if account is None:
        raise ValidationError("not_found", "no such account", status=404)
    return account


async def _body(request: web.Request) -> dict:
    if not request.can_read_body:
        return {}
    payload = await read_json(request)
    if not isinstance(payload, dict):
        raise ValidationError("invalid_request", "body must be a JSON object")
    return payload


async def list_accounts(request: web.Request) -> web.Response:
    _authorise(request)
    status = request.query.get("status")
    accounts = [a for a in await request.app[APP].store.list_accounts() if status in (None, a["status"])]
    return json_response({"data": [public_account(a) for a in accounts]})


async def show_account(request: web.Request) -> web.Response:
    account = await _account(request)
    history = await account_events.history(request.app[APP].store, account["id"])
    return json_response({**public_account(account), "history": history})


async def suspend(request: web.Request) -> web.Response:
    account = await _account(request)
    reason = (await _body(request)).get("reason") or "suspended by an operator"
    if not isinstance(reason, str):
        raise ValidationError("invalid_request", "reason must be a string", "reason")
    state = request.app[APP]
    updated = await suspensions.suspend(state.store, state.settings, account,
                                        [{"rule": "operator", "detail": reason[:1000]}], automated=False,
                                        publisher=state.publisher)
    state.accounts.forget()
    return json_response(public_account(updated))


async def reinstate(request: web.Request) -> web.Response:
    account = await _account(request)
    state = request.app[APP]
    updated = await suspensions.reinstate(state.store, state.settings, account, by="admin-api",
                                          publisher=state.publisher)
    state.accounts.forget()
    state.policy.release(account["id"])
    return json_response(public_account(updated))


async def confirm(request: web.Request) -> web.Response:
    account = await _account(request)
    state = request.app[APP]
    updated = await suspensions.confirm(state.store, state.settings, account, by="admin-api")
    return json_response(public_account(updated))


async def rotate_key(request: web.Request) -> web.Response:
    account = await _account(request)
    grace = (await _body(request)).get("grace_seconds", DEFAULT_GRACE_SECONDS)
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace <= MAX_GRACE_SECONDS:
        raise ValidationError("invalid_request", f"grace_seconds must be between 0 and {MAX_GRACE_SECONDS:g}",
                              "grace_seconds")
    state = request.app[APP]
    api_key = await state.store.rotate_key(account["id"], grace)
    state.accounts.forget()
    return json_response({"id": account["id"], "api_key": api_key, "old_key_valid_for_seconds": grace})

