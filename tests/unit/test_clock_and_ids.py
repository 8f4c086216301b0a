"""Times and ids keep their exact text: router/clock.py format_time and router/ids.py ULIDs."""
import os
import random
from datetime import datetime, timedelta, timezone

from router import clock, ids

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def test_format_time_matches_strftime():
    rng = random.Random(8)
    for _ in range(20000):
        moment = datetime(rng.randint(1970, 2200), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                          rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999999),
                          tzinfo=timezone(timedelta(minutes=rng.randint(-720, 840))))
        utc = moment.astimezone(timezone.utc)
        assert clock.format_time(moment) == utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    assert clock.format_time(datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)) == "2026-01-02T03:04:05.678Z"


def test_ulid_is_crockford_base32_of_time_and_randomness():
    before = int(datetime.now(timezone.utc).timestamp() * 1000)
    made = [ids.message_id() for _ in range(2000)]
    after = int(datetime.now(timezone.utc).timestamp() * 1000)
    for message_id in made:
        text = message_id.removeprefix("msg_")
        assert len(text) == 26 and set(text) <= set(_ALPHABET)
        value = 0
        for char in text:
            value = value * 32 + _ALPHABET.index(char)
        assert value < 1 << 128
        assert before <= value >> 80 <= after
    assert len(set(made)) == len(made)


def test_forked_child_does_not_repeat_its_parents_random_bits():
    ids.message_id()  # the parent has a block of random bytes in hand
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then leave at once
        os.write(write, ids.message_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    parent = ids.message_id()
    assert child[-16:] != parent[-16:]  # the 80 random bits (the last 16 digits)
