"""Store rows -> the JSON resources of SPEC §4."""
from __future__ import annotations

import orjson


def _json(text: str | None):
    return orjson.loads(text) if text else None


def message_resource(row: dict) -> dict:
    extra = _json(row.get("extra")) or {}
    history = row.get("history") or []
    error = None
    if row.get("error_code"):
        error = {"code": row["error_code"], "message": row.get("error_message")}
    resource = {
        "id": row["id"],
        "account_id": row["account_id"],
        "channel": row["channel"],
        "to": row["to_addr"],
        "from": row["from_addr"],
        "body": row["body"],
        "subject": row["subject"],
        "status": row["status"],
        "status_history": [
            {"status": h["status"], "at": h["at"],
             "error": {"code": h["error_code"], "message": h["error_message"]} if h["error_code"] else None}
            for h in history
        ],
        "carrier": row["carrier"],
        "region": row["region"],
        "units": row["units"],
        "price": row["price"],
        "currency": row["currency"],
        "error": error,
        "metadata": _json(row.get("metadata")),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }
    if row["channel"] == "push":
        resource.update({"title": extra.get("title"), "data": extra.get("data"), "platform": extra.get("platform")})
    if row.get("send_at"):
        resource["send_at"] = row["send_at"]
    if row.get("parts"):  # multipart SMS whose carrier reports each part (router/parts.py)
        resource["parts"] = [{"part": p["part"], "carrier_message_id": p["carrier_message_id"], "status": p["status"],
                              "error": {"code": p["error_code"]} if p["error_code"] else None,
                              "updated_at": p["updated_at"]} for p in row["parts"]]
    if row.get("late_receipts"):
        resource["late_receipts"] = _json(row["late_receipts"])
    return resource
