"""GET /v1/usage: the caller's usage ledger summed by day, carrier, channel or country."""
from __future__ import annotations

from decimal import Decimal

from aiohttp import web

from router.errors import ValidationError
from workers.gateway.auth import authenticate
from workers.gateway.errors import json_response
from workers.gateway.messages import _query_time
from workers.gateway.state import APP

GROUPS = {
    "day": lambda r: r["recorded_at"][:10],
    "carrier": lambda r: r["carrier"],
    "channel": lambda r: r["channel"],
    "country": lambda r: r["destination"] if r["channel"] == "sms" else r["channel"],
}


async def get_usage(request: web.Request) -> web.Response:
    state = request.app[APP]
    account = await authenticate(request, state.accounts, allow_suspended=True)
    group_by = request.query.get("group_by", "day")
    if group_by not in GROUPS:
        raise ValidationError("invalid_request", "group_by must be day, carrier, channel or country", "group_by")
    rows = await state.store.usage_rows(account["id"], _query_time(request, "since"), _query_time(request, "until"))
    key_of = GROUPS[group_by]
    groups: dict[str, dict] = {}
    for row in rows:
        group = groups.setdefault(key_of(row), {"messages": 0, "units": 0, "price": Decimal(0), "delivered": 0})
        group["messages"] += 1
        group["units"] += row["units"]
        group["price"] += Decimal(row["price"])
        group["delivered"] += row["status"] == "delivered"
    currencies = sorted({row["currency"] for row in rows}) or [state.settings.pricing.currency]
    data = [{"key": key, **{k: (str(v) if isinstance(v, Decimal) else v) for k, v in g.items()}}
            for key, g in sorted(groups.items())]
    totals = {"messages": sum(g["messages"] for g in groups.values()),
              "units": sum(g["units"] for g in groups.values()),
              "price": str(sum((g["price"] for g in groups.values()), Decimal(0)))}
    return json_response({"group_by": group_by, "currency": currencies[0] if len(currencies) == 1 else currencies,
                          "data": data, "totals": totals})
