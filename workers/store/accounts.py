"""Account keys and secrets: generated here, stored only as hashes (keys) or as is (webhook secrets)."""
from __future__ import annotations

import hashlib
import secrets


def new_api_key() -> str:
    return "mrk_" + secrets.token_urlsafe(32)


def new_webhook_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def hash_key(api_key: str) -> str:
    # keys carry 256 random bits, so a fast hash is enough (no dictionary to guard against)
    return hashlib.sha256(api_key.encode()).hexdigest()
