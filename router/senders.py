"""Choosing a sender from an account's pool, and checking a new pool sender (pure).

Preference: senders registered for the destination's country (and, for US/CA numbers,
its area code when a sender shares it), else any. Within that set the choice is sticky
per recipient by rendezvous hashing: the same recipient gets the same sender for as long
as that sender stays in the pool, and removing one sender moves only its recipients.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

from router.errors import ValidationError
from router.requests import normalise_email, normalise_phone


def _weight(sender: str, recipient: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{sender}|{recipient}".encode(), digest_size=8).digest(), "big")


def _area_code(number: str) -> str | None:
    return number[2:5] if number.startswith("+1") and len(number) == 12 else None


def choose(pool: Sequence[dict], recipient: str, country: str | None) -> dict | None:
    if not pool:
        return None
    local = [s for s in pool if country and s.get("country") == country] or list(pool)
    area = _area_code(recipient)
    if area:
        same_area = [s for s in local if _area_code(s["address"]) == area]
        local = same_area or local
    return max(local, key=lambda s: _weight(s["address"], recipient))


CHANNELS = ("sms", "email", "push")


def normalise_address(channel: str, address, field: str = "address") -> str:
    """A pool sender's or a suppressed address, normalised as sends are (E.164, email)."""
    if not isinstance(address, str) or not address.strip():
        raise ValidationError("invalid_request", f"{field} is required", field)
    address = address.strip()
    if channel == "sms" and address.startswith("+"):
        return normalise_phone(address, field, "invalid_request")
    if channel == "email":
        return normalise_email(address, field, "invalid_request")
    if channel == "sms" and not (address.isdigit() or (address.isalnum() and len(address) <= 11)):
        raise ValidationError("invalid_request", f"{field} must be an E.164 number, a short code or an "
                              "alphanumeric id", field)
    return address


def validate_sender(channel, address, country=None, rate_limit=None) -> tuple[str, str, str | None, float | None]:
    """A new pool sender's fields, checked and normalised: (channel, address, country, rate_limit).

    Shared by `POST /v1/senders` and `msgroute senders add`; raises ValidationError naming the field.
    """
    if channel not in CHANNELS:
        raise ValidationError("unknown_channel", "channel must be sms, email or push", "channel")
    address = normalise_address(channel, address)
    if country is not None and not (isinstance(country, str) and len(country) == 2 and country.isalpha()
                                    and country.isascii()):
        raise ValidationError("invalid_request", "country must be an ISO 3166 alpha-2 code such as GB", "country")
    if rate_limit is not None and (isinstance(rate_limit, bool) or not isinstance(rate_limit, (int, float))
                                   or not rate_limit > 0 or rate_limit == float("inf")):
        raise ValidationError("invalid_request", "rate_limit must be a positive number (messages per second)",
                              "rate_limit")
    return channel, address, (country.upper() if country else None), \
        (float(rate_limit) if rate_limit is not None else None)
