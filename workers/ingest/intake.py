"""Turning a validated request into the accepted message: its Envelope and its store row.

Shared by the HTTP gateway and the AMQP ingest consumer, so both accept messages alike.
"""
from __future__ import annotations

from datetime import timedelta

import orjson

from router import clock, ids
from router.messages import Channel, Envelope, Status
from router.requests import SendRequest


def accept(request: SendRequest, account_id: str, idempotency_key: str | None = None,
           account_callback_url: str | None = None, sender_rate: float | None = None) -> tuple[Envelope, dict]:
    created = clock.now()
    created_at = clock.format_time(created)
    expires_at = None
    if request.validity_period:
        start = clock.parse_time(request.send_at) if request.send_at else created
        expires_at = clock.format_time(start + timedelta(seconds=request.validity_period))
    envelope = Envelope(
        id=ids.message_id(), account_id=account_id, channel=Channel(request.channel), to=request.to,
        created_at=created_at, sender=request.from_, body=request.body, subject=request.subject,
        title=request.title, data=request.data, platform=request.platform, metadata=request.metadata,
        callback_url=request.callback_url or account_callback_url, expires_at=expires_at,
        sender_rate=sender_rate,
    )
    extra = {k: v for k, v in (("title", request.title), ("data", request.data), ("platform", request.platform),
                               ("sender_rate", sender_rate)) if v is not None}
    row = {
        "id": envelope.id, "account_id": account_id, "channel": request.channel, "to_addr": request.to,
        "from_addr": request.from_, "body": request.body, "subject": request.subject,
        "extra": orjson.dumps(extra).decode() if extra else None,
        "metadata": orjson.dumps(request.metadata).decode() if request.metadata is not None else None,
        "callback_url": envelope.callback_url, "status": Status.SCHEDULED if request.send_at else Status.QUEUED,
        "idempotency_key": idempotency_key, "expires_at": expires_at, "send_at": request.send_at, "attempt": 0,
        "created_at": created_at, "updated_at": created_at,
    }
    return envelope, row


def envelope_from_row(row: dict) -> Envelope:
    """The envelope of a stored message (a scheduled message released at its time)."""
    extra = orjson.loads(row["extra"]) if row.get("extra") else {}
    return Envelope(
        id=row["id"], account_id=row["account_id"], channel=Channel(row["channel"]), to=row["to_addr"],
        created_at=row["created_at"], sender=row["from_addr"], body=row["body"], subject=row["subject"],
        title=extra.get("title"), data=extra.get("data"), platform=extra.get("platform"),
        metadata=orjson.loads(row["metadata"]) if row.get("metadata") else None,
        callback_url=row["callback_url"], expires_at=row["expires_at"], sender_rate=extra.get("sender_rate"),
    )
