"""Where a message is going, as routing and usage see it (SPEC §5 `destination`, §7).

SMS: the ISO country of the E.164 number (`001` for non-geographic numbers such as
+800), its digits and number type; email: the domain; push: the platform.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneNumberType

from router.errors import ValidationError
from router.messages import Channel

_NUMBER_TYPES = {getattr(PhoneNumberType, name): name.lower()
                 for name in dir(PhoneNumberType) if name.isupper()}
_APNS_TOKEN = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class Destination:
    channel: str
    key: str  # ISO country (sms), domain (email) or platform (push)
    digits: str | None = None  # E.164 without '+' (sms)
    number_type: str | None = None  # mobile, fixed_line, toll_free, ... (sms, when asked for)


def resolve(channel: str, to: str, platform: str | None = None, *, with_type: bool = True) -> Destination:
    """Raises ValidationError (the SPEC §4 code, field `to`) for an address it cannot read.

    `with_type=False` skips the number type, the costliest step, which routing does not use.
    """
    if channel == Channel.SMS:
        return _sms(to, with_type)
    if channel == Channel.EMAIL:
        domain = to.rpartition("@")[2].strip().rstrip(".").lower()
        if "@" not in to or not domain:
            raise ValidationError("invalid_email", "not an email address", field="to")
        return Destination(Channel.EMAIL, domain)
    if channel == Channel.PUSH:
        if not to:
            raise ValidationError("invalid_device_token", "empty device token", field="to")
        if platform:
            return Destination(Channel.PUSH, platform.lower())
        return Destination(Channel.PUSH, "apns" if _APNS_TOKEN.fullmatch(to) else "fcm")
    raise ValidationError("unknown_channel", f"unknown channel {channel!r}", field="channel")


def _sms(to: str, with_type: bool) -> Destination:
    digits = to[1:] if to.startswith("+") else ""
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 15 and digits[0] != "0"):
        raise ValidationError("invalid_phone_number", "not an E.164 number", field="to")
    regions = next((r for n in (1, 2, 3) if (r := COUNTRY_CODE_TO_REGION_CODE.get(int(digits[:n])))), None)
    if regions is None:
        raise ValidationError("invalid_phone_number", "unknown country calling code", field="to")
    if len(regions) == 1 and not with_type:
        # Most calling codes belong to one region: no need to parse the number (the slow part).
        return Destination(Channel.SMS, regions[0], digits)
    try:
        number = phonenumbers.parse(to, None)
    except phonenumbers.NumberParseException:
        raise ValidationError("invalid_phone_number", "not an E.164 number", field="to") from None
    # A number valid in none of a shared code's regions (e.g. +1 500 test numbers) goes to
    # the code's main region, as phonenumbers lists it first.
    country = phonenumbers.region_code_for_number(number) or regions[0]
    kind = _NUMBER_TYPES.get(phonenumbers.number_type(number), "unknown") if with_type else None
    return Destination(Channel.SMS, country, digits, kind)
