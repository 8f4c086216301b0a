"""Inbound messages: find their account, apply opt-out keywords, announce them.

An inbound message belongs to the account whose sender pool holds its `To`; else to the
account that last sent to its `From` from that `To`; else it is counted as unmatched and
dropped (logged with masked addresses). STOP-family keywords put the sender on that
account's suppression list for the channel; START/UNSTOP take it off.
"""
from __future__ import annotations

import logging

import orjson

from router import clock, topology
from router.privacy import mask_address
from workers import metrics
from workers.store import senders, suppressions

log = logging.getLogger("msgroute.inbound")
OPT_OUT = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"}
OPT_IN = {"START", "UNSTOP"}


def keyword(body: str) -> str | None:
    word = body.strip().upper()
    return "opt_out" if word in OPT_OUT else "opt_in" if word in OPT_IN else None


async def owner(store, channel: str, sender: str, to: str) -> str | None:
    account_id = await senders.owner_of(store, channel, to)
    if account_id:
        return account_id
    row = await store.run(lambda cur: cur.fetchone(
        "SELECT account_id FROM messages WHERE channel = ? AND to_addr = ? AND from_addr = ? ORDER BY id DESC LIMIT 1",
        (channel, sender, to)))
    return row["account_id"] if row else None


async def handle(store, publisher, carrier: str, channel: str, message, received_at: str) -> None:
    account_id = await owner(store, channel, message.sender, message.to)
    if account_id is None:
        metrics.inbound_total.labels(channel, "unmatched").inc()
        log.info("inbound message matches no account; dropped",
                 extra={"carrier": carrier, "from": mask_address(message.sender), "to": mask_address(message.to)})
        return
    action = keyword(message.body)
    if action == "opt_out":
        await suppressions.add(store, [(account_id, channel, message.sender, "opted_out")])
    elif action == "opt_in":
        await suppressions.remove(store, account_id, channel, message.sender)
    metrics.inbound_total.labels(channel, action or "message").inc()
    event = {"type": "message.inbound", "account_id": account_id, "channel": channel, "from": message.sender,
             "to": message.to, "body": message.body, "carrier": carrier, "received_at": received_at}
    outputs = [(topology.EVENTS_EXCHANGE, f"inbound.{channel}", orjson.dumps(event), None)]
    account = await store.get_account(account_id)
    if account and account.get("callback_url"):
        outputs.append(("", topology.CALLBACKS_QUEUE, orjson.dumps(
            {"url": account["callback_url"], "account_id": account_id, "event": event}), None))
    await publisher.publish_many(outputs)
    log.info("inbound message", extra={"account_id": account_id, "carrier": carrier, "action": action or "message",
                                        "from": mask_address(message.sender), "at": clock.now_iso()})
