"""Data-subject requests, shared by the HTTP API and `msgroute privacy`: export everything an
account holds about one address, or erase it (content removed, address replaced by its keyed
pseudonym). Always scoped to one account."""
from __future__ import annotations

import logging
import os

from router.errors import ValidationError
from router.privacy import mask_address, pseudonym
from router.requests import normalise_email, normalise_phone
from router.settings import Settings
from workers.gateway.resources import message_resource
from workers.store import privacy as privacy_store

log = logging.getLogger("msgroute.privacy")
MIN_KEY_CHARS = 16


def subject_addresses(to) -> list[str]:
    """The forms the address may be stored under: as given, and as ingest normalises it."""
    if not isinstance(to, str) or not to.strip() or len(to) > 4096:
        raise ValidationError("invalid_request", "to must be the address (number, email or device token)", "to")
    raw = to.strip()
    forms = [raw]
    try:
        if raw.startswith("+"):
            forms.append(normalise_phone(raw, "to"))
        elif "@" in raw:
            forms.append(normalise_email(raw, "to", "invalid_email"))
    except ValidationError:
        pass  # never valid at ingest, but a refused AMQP request may have stored it as given
    return list(dict.fromkeys(forms))


def hash_key(settings: Settings) -> bytes:
    value = settings.privacy.hash_key
    key = os.environ.get(value[4:], "") if value.startswith("env:") else value
    if len(key) < MIN_KEY_CHARS:
        where = f"the environment variable {value[4:]}" if value.startswith("env:") else "[privacy] hash_key"
        raise ValidationError("unavailable", f"erasure needs a pseudonymisation key: set {where} to a secret of at "
                              f"least {MIN_KEY_CHARS} characters", status=503)
    return key.encode()


async def export(store, account_id: str, to) -> dict:
    addresses = subject_addresses(to)
    messages, usage, suppressions = await privacy_store.export_subject(store, account_id, addresses)
    log.info("privacy export", extra={"account_id": account_id, "to": mask_address(addresses[0]),
                                      "messages": len(messages)})
    return {"account_id": account_id, "messages": [message_resource(m) for m in messages], "usage_records": usage,
            "suppressions": suppressions}


async def erase(store, settings: Settings, account_id: str, to) -> dict:
    addresses = subject_addresses(to)
    subject = pseudonym(hash_key(settings), addresses[-1])
    messages, suppressions = await privacy_store.erase_subject(store, account_id, addresses, subject)
    log.info("privacy erase", extra={"account_id": account_id, "to": mask_address(addresses[0]),
                                     "messages": messages, "suppressions": suppressions})
    return {"account_id": account_id, "pseudonym": subject, "messages_erased": messages,
            "suppressions_erased": suppressions}


def suppression_forms(settings: Settings, address: str) -> list[str]:
    """The forms an address's suppression may be stored under: itself, and its pseudonym once
    erased (when a key is configured), so an opt-out outlives the erasure of the address."""
    try:
        return [address, pseudonym(hash_key(settings), address)]
    except ValidationError:
        return [address]
