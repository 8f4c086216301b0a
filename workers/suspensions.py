"""Account suspension with a human in the loop: suspend (automated or operator), the
account's review request, and an operator's reinstate or confirm. Every decision keeps
its reasons and signals on the account and in its `account_events` history, is announced
as an `account.*` event, and (suspend, reinstate) is posted to the account's callback URL."""
from __future__ import annotations

import logging

import orjson

from router import clock, topology
from router.errors import ValidationError
from router.settings import Settings
from workers import metrics
from workers.store import account_events

log = logging.getLogger("msgroute.accounts")


async def _publish(settings: Settings, items: list[tuple], publisher=None) -> None:
    """Publish with confirms; one-shot commands open a short connection of their own."""
    if publisher is not None:
        await publisher.publish_many(items)
        return
    from workers import amqp
    connection = await amqp.connect(settings, "msgroute accounts")
    try:
        channel = await amqp.open_channel(connection)
        await amqp.declare_topology(channel, settings)
        await amqp.Publisher(channel, settings.broker.confirm_timeout_seconds).publish_many(items)
    finally:
        await connection.close()


async def _decide(store, settings: Settings, account: dict, event: dict, publisher, notify: bool,
                  **fields) -> dict:
    updated = await account_events.record(store, account["id"], event, **fields)
    items = [(topology.EVENTS_EXCHANGE, event["type"], orjson.dumps(event), None)]
    if notify and account.get("callback_url"):
        job = {"url": account["callback_url"], "account_id": account["id"], "event": event}
        items.append(("", topology.CALLBACKS_QUEUE, orjson.dumps(job), None))
    await _publish(settings, items, publisher)
    return updated


def _suspension(account: dict) -> dict:
    return orjson.loads(account["suspension"]) if account.get("suspension") else {}


def _require(account: dict, status: str) -> None:
    if account["status"] != status:
        code = "not_suspended" if status == "suspended" else "not_active"
        raise ValidationError(code, f"account {account['id']} is {account['status']}, not {status}", status=409)


async def suspend(store, settings: Settings, account: dict, reasons: list[dict], automated: bool,
                  signals: dict | None = None, publisher=None) -> dict:
    """reasons: [{"rule", "detail"}]; signals: what each rule saw, by rule name."""
    _require(account, "active")
    record = {"at": clock.now_iso(), "automated": automated, "reasons": reasons, "signals": signals or {},
              "state": "pending_review" if automated else "operator"}
    event = {"type": "account.suspended", "account_id": account["id"], **record}
    updated = await _decide(store, settings, account, event, publisher, notify=True, status="suspended",
                            suspension=orjson.dumps(record).decode(), review_request=None)
    if automated:
        metrics.accounts_suspended.inc()
    log.warning("account suspended", extra={"account_id": account["id"], "automated": automated,
                                            "rules": [r["rule"] for r in reasons]})
    return updated


async def request_review(store, settings: Settings, account: dict, reason: str, publisher=None) -> dict:
    _require(account, "suspended")
    request = {"at": clock.now_iso(), "reason": reason}
    event = {"type": "account.review_requested", "account_id": account["id"], **request}
    updated = await _decide(store, settings, account, event, publisher, notify=False,
                            review_request=orjson.dumps(request).decode())
    log.info("account review requested", extra={"account_id": account["id"]})
    return updated


async def reinstate(store, settings: Settings, account: dict, by: str, publisher=None) -> dict:
    _require(account, "suspended")
    at = clock.now_iso()
    suspension = _suspension(account)
    if suspension:
        suspension.update(state="reinstated", reinstated_by=by, reinstated_at=at)
    event = {"type": "account.reinstated", "account_id": account["id"], "by": by, "at": at}
    updated = await _decide(store, settings, account, event, publisher, notify=True, status="active",
                            review_request=None,
                            suspension=orjson.dumps(suspension).decode() if suspension else None)
    log.info("account reinstated", extra={"account_id": account["id"], "by": by})
    return updated


async def confirm(store, settings: Settings, account: dict, by: str, publisher=None) -> dict:
    """An operator upholds the suspension after review; the account stays suspended.

    Recorded in the account's history; not published (SPEC §5 names no event for it)."""
    _require(account, "suspended")
    suspension = _suspension(account)
    suspension.update(state="confirmed", confirmed_by=by, confirmed_at=clock.now_iso())
    event = {"type": "account.suspension_confirmed", "account_id": account["id"], "by": by,
             "at": suspension["confirmed_at"]}
    updated = await account_events.record(store, account["id"], event, status="suspended",
                                          suspension=orjson.dumps(suspension).decode())
    log.info("account suspension confirmed", extra={"account_id": account["id"], "by": by})
    return updated
