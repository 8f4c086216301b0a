"""Personal data in what we emit: masked addresses for logs and metrics, keyed pseudonyms for erasure."""
from __future__ import annotations

import hashlib
import hmac


def mask_address(address: str | None) -> str:
    """+447911123456 -> +44*******456; alice@example.com -> a****@example.com; tokens keep 4 chars."""
    if not address:
        return ""
    if "@" in address:
        local, _, domain = address.rpartition("@")
        return (local[:1] + "****@" + domain) if local else "****@" + domain
    if address.startswith("+"):
        if len(address) <= 6:
            return "+" + "*" * (len(address) - 1)
        return address[:3] + "*" * (len(address) - 6) + address[-3:]
    return address[:4] + "…" if len(address) > 4 else "****"


def pseudonym(key: bytes, address: str) -> str:
    """The stable keyed hash that replaces an erased address everywhere."""
    return "anon_" + hmac.new(key, address.lower().encode(), hashlib.sha256).hexdigest()[:32]
