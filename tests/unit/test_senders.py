"""Sender choice from a pool: country first, sticky per recipient, minimal reshuffling."""
from router.senders import choose

POOL = [{"address": "+447400000001", "country": "GB"}, {"address": "+447400000002", "country": "GB"},
        {"address": "+14155550001", "country": "US"}, {"address": "+12125550001", "country": "US"},
        {"address": "Acme", "country": None}]
RECIPIENTS = [f"+4474001{n:05d}" for n in range(1000)]


def test_destination_country_first_and_us_area_code():
    assert {choose(POOL, r, "GB")["country"] for r in RECIPIENTS} == {"GB"}
    assert choose(POOL, "+12125559999", "US")["address"] == "+12125550001"  # same area code
    assert choose(POOL, "+14155559999", "US")["address"] == "+14155550001"
    assert choose(POOL, "+33612345678", "FR")["address"] in {s["address"] for s in POOL}  # none local: any
    assert choose([], "+33612345678", "FR") is None


def test_sticky_and_spread_over_many_recipients():
    first = {r: choose(POOL, r, "GB")["address"] for r in RECIPIENTS}
    again = {r: choose(list(reversed(POOL)), r, "GB")["address"] for r in RECIPIENTS}
    assert first == again  # the pool's order does not matter
    counts = {a: list(first.values()).count(a) for a in set(first.values())}
    assert set(counts) == {"+447400000001", "+447400000002"} and min(counts.values()) > 400


def test_removing_a_sender_moves_only_its_recipients():
    before = {r: choose(POOL, r, "GB")["address"] for r in RECIPIENTS}
    smaller = [s for s in POOL if s["address"] != "+447400000002"]
    after = {r: choose(smaller, r, "GB")["address"] for r in RECIPIENTS}
    moved = [r for r in RECIPIENTS if before[r] != after[r]]
    assert all(before[r] == "+447400000002" for r in moved)
    assert all(after[r] == before[r] for r in RECIPIENTS if before[r] == "+447400000001")
