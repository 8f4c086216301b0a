"""An account as operators see it (CLI and admin API): no key hashes, no webhook secret,
and the suspension and review request decoded."""
from __future__ import annotations

import orjson

HIDDEN = ("api_key_hash", "old_key_hash", "webhook_secret")


def public_account(account: dict) -> dict:
    shown = {k: v for k, v in account.items() if k not in HIDDEN}
    for key in ("suspension", "review_request"):
        if shown.get(key):
            shown[key] = orjson.loads(shown[key])
    return shown
