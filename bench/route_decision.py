"""Time one route decision per message against a bare baseline, in the same run.

    python bench/route_decision.py [--messages 50000]

Six SMS carriers in three regions, a mix of destinations (UK and US numbers share their
calling code with other regions, so they take phonenumbers' slower path), some health
history. Prints microseconds per decision and the ratio to the baseline (a dict lookup
that picks the channel's first carrier).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import phonenumbers  # noqa: E402

from router.destination import resolve  # noqa: E402
from router.health import CarrierHealth  # noqa: E402
from router.routing import Router, choose_route  # noqa: E402
from router.settings import from_dict  # noqa: E402

CARRIERS = [
    ("twilio-uk", "uk-south", {"44": "0.0400", "447": "0.0380", "1": "0.0079", "default": "0.0500"}),
    ("vonage-eu", "eu-west", {"33": "0.0600", "49": "0.0700", "44": "0.0390", "default": "0.0550"}),
    ("vonage-us", "us-east", {"1": "0.0070", "1212": "0.0065", "default": "0.0600"}),
    ("bulk-eu", "eu-west", {"FR": "0.0550", "DE": "0.0650", "ES": "0.0500"}),
    ("backup-uk", "uk-south", {"default": "0.0800"}),
    ("sandbox-sms", "us-east", {"default": "0.0100"}),
]
PREFIXES = ["+447400", "+447911", "+4420", "+1212", "+1415", "+336", "+4915", "+3461"]


def build(n: int, seed: int = 1):
    rng = random.Random(seed)
    settings = from_dict({
        "regions": [{"name": r} for r in ("uk-south", "eu-west", "us-east")],
        "carriers": [{"name": name, "channel": "sms", "adapter": "sandbox", "region": region,
                      "rates": {**rates, "currency": "USD"}} for name, region, rates in CARRIERS],
    })
    numbers = [p + "".join(rng.choice("0123456789") for _ in range(13 - len(p))) for p in
               (rng.choice(PREFIXES) for _ in range(n))]
    health = {name: CarrierHealth(latency_ewma_ms=rng.uniform(50, 800), latency_at=0.0,
                                  quality_ewma=rng.uniform(0.8, 1.0), quality_at=0.0)
              for name, _, _ in CARRIERS}
    health["backup-uk"] = CarrierHealth(state="open", opened_at=0.0)
    return settings, numbers, health


def timed(fn, numbers, repeat=3) -> float:
    """Best of `repeat` runs, in microseconds per message."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for to in numbers:
            fn(to)
        best = min(best, time.perf_counter() - start)
    return best / len(numbers) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args()
    settings, numbers, health = build(args.messages)
    router, policy, carriers = Router(settings), settings.routing, settings.carriers
    allowed, now, saturated = {"uk-south", "eu-west", "us-east"}, 10.0, frozenset({"vonage-eu"})
    by_channel = {"sms": [c.name for c in carriers]}

    rows = [
        ("baseline: by_channel['sms'][0]", timed(lambda to: by_channel["sms"][0], numbers)),
        ("phonenumbers.parse alone", timed(lambda to: phonenumbers.parse(to, None), numbers)),
        ("resolve(with_type=False)", timed(lambda to: resolve("sms", to, with_type=False), numbers)),
        ("Router(settings).decide", timed(
            lambda to: router.decide("sms", to, None, allowed, health, now, saturated), numbers)),
        ("choose_route", timed(
            lambda to: choose_route("sms", to, None, carriers, allowed, health, policy, now, saturated), numbers)),
    ]
    base = rows[0][1]
    print(f"{args.messages} decisions, {len(carriers)} carriers, Python {sys.version.split()[0]}")
    print(f"{'path':<32} {'us/decision':>12} {'decisions/s':>12} {'x baseline':>11}")
    for name, us in rows:
        print(f"{name:<32} {us:>12.2f} {1e6 / us:>12,.0f} {us / base:>11.0f}")


if __name__ == "__main__":
    main()
