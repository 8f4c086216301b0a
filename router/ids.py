"""Time-ordered identifiers: a 48-bit millisecond timestamp and 80 random bits in
Crockford base32 (the ULID layout), so ids sort by creation time."""
from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 10 bits -> two digits
_RANDOM_BYTES = 10
_BUFFER_IDS = 256  # one read of the OS's random source serves this many ids


class _Randomness:
    """80 random bits per id, from os.urandom read in blocks: one system call per block
    instead of one per id (ids are made for every accepted message)."""

    def __init__(self) -> None:
        self._block = b""
        self._used = 0
        self._lock = threading.Lock()  # two threads must never take the same bytes

    def take(self) -> int:
        with self._lock:
            if self._used >= len(self._block):
                self._block, self._used = os.urandom(_RANDOM_BYTES * _BUFFER_IDS), 0
            start, self._used = self._used, self._used + _RANDOM_BYTES
            return int.from_bytes(self._block[start:self._used], "big")

    def forget(self) -> None:
        self._block, self._used = b"", 0
        self._lock = threading.Lock()


_randomness = _Randomness()
os.register_at_fork(after_in_child=_randomness.forget)  # a forked child must not repeat its parent's bits


def _ulid() -> str:
    value = (int(time.time() * 1000) << 80) | _randomness.take()
    pairs = _PAIRS
    # 130 bits as 26 digits: the top 3 bits, twelve 10-bit pairs, the last 5 bits
    return (_ALPHABET[value >> 125] + "".join([pairs[(value >> shift) & 1023] for shift in range(115, 4, -10)])
            + _ALPHABET[value & 31])


def message_id() -> str:
    return "msg_" + _ulid()


def account_id() -> str:
    return "acc_" + _ulid()


def usage_id(message_id: str) -> str:
    """One usage record per message, so its id derives from the message's."""
    return "usg_" + message_id.removeprefix("msg_")
