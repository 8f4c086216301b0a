"""The message API: POST /v1/messages, POST /v1/messages/batch, GET /v1/messages[/{id}]."""
from __future__ import annotations

import logging
from functools import partial

import orjson
from aiohttp import web

from router import clock, requests, topology
from router.errors import ValidationError
from router.privacy import mask_address
from workers import metrics
from workers.ingest import intake
from workers.amqp import PublishFailed, PublishUncertain
from workers.privacy import suppression_forms
from workers.store import scheduled, store, suppressions
from workers.gateway.auth import authenticate
from workers.gateway.errors import error_response, json_response
from workers.gateway.resources import message_resource
from workers.gateway.state import APP
from workers.gateway import unconfirmed

log = logging.getLogger("msgroute.gateway")

MAX_BATCH = 1000
MAX_JSON_DEPTH = 32
RETRY_AFTER_UNAVAILABLE = "2"


async def read_json(request: web.Request):
    content_type = request.headers.get("Content-Type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ValidationError("unsupported_media_type", "send Content-Type: application/json", status=415)
    raw = await request.read()
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationError("invalid_json", f"body is not valid JSON: {exc.msg}") from None
    if _depth(payload) > MAX_JSON_DEPTH:
        raise ValidationError("invalid_json", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return payload


def _depth(value, level: int = 0) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255:
        raise ValidationError("invalid_request", "Idempotency-Key must be 1 to 255 characters", "Idempotency-Key")
    return key


async def _admit(request: web.Request, count: int) -> dict:
    state = request.app[APP]
    account = await authenticate(request, state.accounts)
    wait = state.rate_limiter.take(account["id"], count)
    if wait:
        raise _RateLimited(wait)
    return account


class _RateLimited(Exception):
    def __init__(self, wait: float):
        self.wait = wait


def _rate_limited(exc: _RateLimited) -> web.Response:
    return error_response(429, "rate_limited", "too many requests for this account",
                          headers={"Retry-After": str(max(1, round(exc.wait + 0.5)))})


async def _accept_many(state, account: dict, items: list, key: str | None, batch: bool):
    """Validate, store and publish; returns one (envelope_or_None, replay_id, error) per item."""
    results: list = [None] * len(items)
    accepted = []
    for index, item in enumerate(items):
        try:
            parsed = requests.parse(item)
            if parsed.account_id not in (None, account["id"]):
                raise ValidationError("invalid_request", "account_id is for AMQP ingest only", "account_id")
            await state.policy.check(account, parsed)
            state.admission.check(parsed, set(account["regions"].split(",")) if account.get("regions") else None)
        except ValidationError as exc:
            state.policy.refused(account, exc)
            channel = item.get("channel") if isinstance(item, dict) else None
            metrics.messages_rejected.labels(channel if channel in ("sms", "email", "push") else "unknown",
                                             exc.code).inc()
            results[index] = (None, None, exc)
            continue
        accepted.append((index, parsed))
    if not accepted:
        return results
    forms = partial(suppression_forms, state.settings)
    # Without a sender pool for the channel the request stays as it is, so its suppression
    # check can be made in the insert's transaction: one transaction per request, shared with
    # concurrent requests (workers/store/group_commit.py). With a pool the check comes first:
    # the pool is applied only to recipients that are not suppressed.
    pools = {channel: bool(await state.sender_pools.pool(account["id"], channel))
             for channel in dict.fromkeys(parsed.channel for _, parsed in accepted)}
    pooled = [(parsed.channel, parsed.to) for _, parsed in accepted if pools[parsed.channel]]
    if pooled:
        alias = suppressions.stored_forms(pooled, forms)
        suppressed = await state.writes.run(lambda cur: suppressions.find(cur, account["id"], alias))
    checked = []  # (index, request, sender rate, suppression checked already)
    for index, parsed in accepted:
        if not pools[parsed.channel]:
            checked.append((index, parsed, None, False))
            continue
        reason = suppressed.get((parsed.channel, parsed.to))
        if reason is not None:
            results[index] = (None, None, _suppressed(parsed.channel, reason))
            continue
        try:
            parsed, sender_rate = await state.sender_pools.apply(account["id"], parsed)
        except ValidationError as exc:
            metrics.messages_rejected.labels(parsed.channel, exc.code).inc()
            results[index] = (None, None, exc)
            continue
        checked.append((index, parsed, sender_rate, True))
    if not checked:
        return results
    candidates = []
    for index, parsed, sender_rate, was_checked in checked:
        item_key = None if key is None else (f"{key}#{index}" if batch else key)
        envelope, row = intake.accept(parsed, account["id"], item_key, account.get("callback_url"), sender_rate)
        candidates.append((index, envelope, row, was_checked))
    unchecked = [(row["channel"], row["to_addr"]) for _, _, row, was_checked in candidates if not was_checked]
    alias = suppressions.stored_forms(unchecked, forms) if unchecked else {}
    cutoff = store.idempotency_cutoff() if key is not None else None  # only keyed rows look it up

    def _suppress_and_insert(cur):
        found = suppressions.find(cur, account["id"], alias) if alias else {}
        rows = [row for _, _, row, was_checked in candidates
                if was_checked or (row["channel"], row["to_addr"]) not in found]
        return found, store.insert_rows(cur, rows, cutoff)
    suppressed, replays = await state.writes.run(_suppress_and_insert)
    accepted = []
    for index, envelope, row, was_checked in candidates:
        reason = None if was_checked else suppressed.get((row["channel"], row["to_addr"]))
        if reason is not None:
            results[index] = (None, None, _suppressed(row["channel"], reason))
        else:
            accepted.append((index, envelope, row))
    fresh = [(index, envelope, row) for (index, envelope, row), replay in zip(accepted, replays) if replay is None]
    for (index, envelope, _), replay in zip(accepted, replays):
        results[index] = (envelope, replay, None)
    replayed = [replay for replay in replays if replay is not None]
    if replayed:
        await unconfirmed.republish_queued(state.store, state.unconfirmed, account["id"], replayed)
    to_route = [(index, envelope) for index, envelope, row in fresh if row["status"] == "queued"]
    failures = await state.ingest_publisher.publish_each(
        [unconfirmed.route_item(envelope) for _, envelope in to_route])
    refused = [(index, envelope, f) for (index, envelope), f in zip(to_route, failures) if f is not None]
    if refused:
        log.warning("broker did not confirm; answering 503", extra={"error": str(refused[0][2]),
                                                                    "count": len(refused)})
        # refused outright: the row goes; no confirm in time: the broker may have it, so the row
        # stays and is published again until confirmed (workers/gateway/unconfirmed.py)
        await state.store.delete_messages([e.id for _, e, f in refused if not isinstance(f, PublishUncertain)])
        state.unconfirmed.hold([e for _, e, f in refused if isinstance(f, PublishUncertain)])
        unavailable = ValidationError("unavailable", "the broker could not confirm the message; retry with the "
                                      "same Idempotency-Key", status=503)
        for index, _, _ in refused:
            results[index] = (None, None, unavailable)
        refused_ids = {e.id for _, e, _ in refused}
        fresh = [item for item in fresh if item[1].id not in refused_ids]
    for _, envelope, row in fresh:
        metrics.messages_accepted.labels(envelope.channel).inc()
        state.policy.observe(account, envelope)
        log.info("accepted", extra={"message_id": envelope.id, "account_id": account["id"],
                                    "channel": str(envelope.channel), "to": mask_address(envelope.to)})
    return results


def _suppressed(channel: str, reason: str) -> ValidationError:
    code = suppressions.refusal_code(reason)
    metrics.messages_rejected.labels(channel, code).inc()
    return ValidationError(code, f"the recipient is on this account's suppression list ({reason})", "to")


async def post_message(request: web.Request) -> web.Response:
    state = request.app[APP]
    try:
        account = await _admit(request, 1)
    except _RateLimited as exc:
        return _rate_limited(exc)
    payload = await read_json(request)
    key = _idempotency_key(request)
    [(envelope, replay, error)] = await _accept_many(state, account, [payload], key, batch=False)
    if error is not None:
        headers = {"Retry-After": RETRY_AFTER_UNAVAILABLE} if error.status == 503 else None
        if getattr(error, "retry_after", None):
            headers = {"Retry-After": str(error.retry_after)}
        return error_response(error.status, error.code, error.message, error.field, headers=headers)
    if replay is not None:
        row = await state.store.get_message(account["id"], replay)
        return json_response(_summary(row), 202, headers={"Idempotent-Replayed": "true"})
    return json_response(_envelope_summary(envelope, payload), 202)


async def post_batch(request: web.Request) -> web.Response:
    state = request.app[APP]
    payload = await read_json(request)
    if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
        raise ValidationError("invalid_request", 'body must be {"messages": [...]}', "messages")
    items = payload["messages"]
    if not items or len(items) > MAX_BATCH:
        raise ValidationError("invalid_request", f"a batch holds 1 to {MAX_BATCH} messages", "messages")
    try:
        account = await _admit(request, len(items))
    except _RateLimited as exc:
        return _rate_limited(exc)
    results = await _accept_many(state, account, items, _idempotency_key(request), batch=True)
    out = []
    for index, (envelope, replay, error) in enumerate(results):
        if error is not None:
            out.append({"index": index, "error": error.to_dict()})
        elif replay is not None:
            out.append({"index": index, "id": replay, "status": "queued", "replayed": True})
        else:
            out.append({"index": index, "id": envelope.id, "status": _initial_status(items[index])})
    if all("error" in r and r["error"]["code"] == "unavailable" for r in out):
        return error_response(503, "unavailable", "the broker could not confirm the messages; retry",
                              headers={"Retry-After": RETRY_AFTER_UNAVAILABLE})
    return json_response({"results": out}, 202)


def _initial_status(item: dict) -> str:
    return "scheduled" if item.get("send_at") else "queued"


def _envelope_summary(envelope, payload: dict) -> dict:
    return {"id": envelope.id, "status": _initial_status(payload), "channel": envelope.channel,
            "created_at": envelope.created_at}


def _summary(row: dict) -> dict:
    return {"id": row["id"], "status": row["status"], "channel": row["channel"], "created_at": row["created_at"]}


async def get_message(request: web.Request) -> web.Response:
    state = request.app[APP]
    account = await authenticate(request, state.accounts, allow_suspended=True)
    row = await state.store.get_message(account["id"], request.match_info["id"])
    if row is None:
        return error_response(404, "not_found", "no such message")
    return json_response(message_resource(row))


def _query_time(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is None:
        return None
    try:
        return clock.format_time(clock.parse_time(value))
    except ValueError:
        raise ValidationError("invalid_request", f"{name} must be an RFC 3339 time or a date", name) from None


async def list_messages(request: web.Request) -> web.Response:
    state = request.app[APP]
    account = await authenticate(request, state.accounts, allow_suspended=True)
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        limit = -1
    if not 1 <= limit <= 500:
        raise ValidationError("invalid_request", "limit must be between 1 and 500", "limit")
    status, channel = request.query.get("status"), request.query.get("channel")
    if channel is not None and channel not in ("sms", "email", "push"):
        raise ValidationError("unknown_channel", "channel must be sms, email or push", "channel")
    cursor = request.query.get("cursor")
    if cursor is not None and not cursor.startswith("msg_"):
        raise ValidationError("invalid_request", "cursor is not one this API returned", "cursor")
    rows = await state.store.list_messages(
        account["id"], status=status, channel=channel, since=_query_time(request, "since"),
        until=_query_time(request, "until"), before_id=cursor, limit=limit + 1)
    page = rows[:limit]
    next_cursor = page[-1]["id"] if len(rows) > limit else None
    return json_response({"data": [message_resource(r) for r in page], "next_cursor": next_cursor})


async def cancel_message(request: web.Request) -> web.Response:
    """DELETE /v1/messages/{id}: cancel a scheduled message (409 once it has been released)."""
    state = request.app[APP]
    account = await authenticate(request, state.accounts, allow_suspended=True)
    message_id = request.match_info["id"]
    row = await state.store.get_message(account["id"], message_id)
    if row is None:
        return error_response(404, "not_found", "no such message")
    if not await scheduled.cancel(state.store, message_id):
        return error_response(409, "not_cancelable", f"the message is {row['status']}; only a scheduled message "
                              "can be canceled")
    row = await state.store.get_message(account["id"], message_id)
    event = {"type": "message.status", "message_id": message_id, "account_id": account["id"],
             "channel": row["channel"], "status": "canceled", "previous_status": "scheduled", "carrier": None,
             "region": None, "carrier_message_id": None, "error": None, "attempt": 0,
             "occurred_at": row["updated_at"], "metadata": orjson.loads(row["metadata"]) if row["metadata"] else None}
    outputs = [(topology.EVENTS_EXCHANGE, topology.status_key(row["channel"], "canceled"), orjson.dumps(event), None)]
    if row["callback_url"]:
        outputs.append(("", topology.CALLBACKS_QUEUE, orjson.dumps(
            {"url": row["callback_url"], "account_id": account["id"], "event": event}), None))
    try:
        await state.publisher.publish_many(outputs)
    except PublishFailed:  # the cancel stands; only its announcement was lost
        log.warning("cancel event not confirmed", extra={"message_id": message_id})
    return json_response(message_resource(row))
