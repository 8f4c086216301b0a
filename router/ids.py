"""Time-ordered identifiers: a 48-bit millisecond timestamp and 80 random bits in
Crockford base32 (the ULID layout), so ids sort by creation time."""
from __future__ import annotations

import base64
import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# base64's base32 digits -> Crockford's: the 128 bits, right-aligned in 160, encode to 32 digits of
# which the first 6 are always zero; the last 26 are the ULID
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())


def _ulid() -> str:
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return base64.b32encode(value.to_bytes(20, "big"))[6:].translate(_CROCKFORD).decode()


def message_id() -> str:
    return "msg_" + _ulid()


def account_id() -> str:
    return "acc_" + _ulid()


def usage_id(message_id: str) -> str:
    """One usage record per message, so its id derives from the message's."""
    return "usg_" + message_id.removeprefix("msg_")
