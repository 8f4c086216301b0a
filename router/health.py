"""Carrier health as immutable values: the circuit breaker, recent latency and delivery quality.

The caller keeps one CarrierHealth per carrier (a dict keyed by carrier name, or by
(carrier, country) if it wants finer circuits) and replaces it with what these functions
return. Times are seconds on any clock, used consistently.

Circuit: closed -> open after `circuit_failure_threshold` consecutive transient failures,
or when more than half of the last WINDOW sends failed transiently (and at least the
threshold did); open -> half_open once
`circuit_cooldown_seconds` have passed (derived from the time, never stored); half_open ->
closed on the next answered send, -> open again on the next transient failure. Permanent
failures are about the message (bad number, bad content), not the carrier: they count as
answers. Results arriving while the circuit is open (sends already in flight) leave it open.

Latency and quality are moving averages whose evidence fades with a half-life of
HALF_LIFE_SECONDS when no new samples arrive: quality drifts back to neutral (1.0, no
known delivery problem) and latency loses its weight in scoring (`latency_freshness`), so
a carrier that was bad an hour ago gets traffic, and therefore a new measurement, again.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from router.settings import RoutingSettings

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
WINDOW = 20  # sends the error-rate rule looks at
ALPHA = 0.1  # weight of one new sample in the moving averages
HALF_LIFE_SECONDS = 300.0
NEUTRAL_QUALITY = 1.0


@dataclass(frozen=True, slots=True)
class CarrierHealth:
    state: str = CLOSED  # as recorded: closed or open; circuit_state() derives half_open
    consecutive_failures: int = 0  # transient, in a row
    opened_at: float | None = None
    latency_ewma_ms: float | None = None
    latency_at: float = 0.0
    quality_ewma: float | None = None  # share of receipts that said delivered
    quality_at: float = 0.0
    samples: int = 0  # send outcomes recorded
    recent: int = 0  # bit i set: the (i+1)-th latest send failed transiently
    recent_len: int = 0  # sends held in `recent`, at most WINDOW


HEALTHY = CarrierHealth()


def circuit_state(h: CarrierHealth, now: float, policy: RoutingSettings) -> str:
    if h.state == OPEN and h.opened_at is not None and now - h.opened_at >= policy.circuit_cooldown_seconds:
        return HALF_OPEN
    return h.state


def record_send(h: CarrierHealth, ok: bool, transient: bool, latency_ms: float | None,
                now: float, policy: RoutingSettings) -> CarrierHealth:
    failed = not ok and transient
    state = circuit_state(h, now, policy)
    latency, latency_at = h.latency_ewma_ms, h.latency_at
    if latency_ms is not None and not failed:  # a timeout measures our patience, not the carrier
        alpha = 1.0 if latency is None else 1.0 - (1.0 - ALPHA) * _fade(now - latency_at)
        latency = latency_ms if latency is None else latency + alpha * (latency_ms - latency)
        latency_at = now
    h = replace(h, latency_ewma_ms=latency, latency_at=latency_at, samples=h.samples + 1,
                consecutive_failures=h.consecutive_failures + 1 if failed else 0,
                recent=((h.recent << 1) | failed) & ((1 << WINDOW) - 1),
                recent_len=min(h.recent_len + 1, WINDOW))
    if state == HALF_OPEN:
        if failed:
            return replace(h, state=OPEN, opened_at=now)
        return replace(h, state=CLOSED, opened_at=None, recent=0, recent_len=0)
    if state == CLOSED and failed and (
            h.consecutive_failures >= policy.circuit_failure_threshold
            or (h.recent_len >= WINDOW and 2 * h.recent.bit_count() > h.recent_len
                and h.recent.bit_count() >= policy.circuit_failure_threshold)):
        return replace(h, state=OPEN, opened_at=now)
    return h


def record_receipt(h: CarrierHealth, delivered: bool, now: float) -> CarrierHealth:
    prior = quality(h, now)
    return replace(h, quality_ewma=prior + ALPHA * ((1.0 if delivered else 0.0) - prior), quality_at=now)


def quality(h: CarrierHealth, now: float) -> float:
    """Share of receipts delivered, drifting back to NEUTRAL_QUALITY as the evidence ages."""
    if h.quality_ewma is None:
        return NEUTRAL_QUALITY
    return NEUTRAL_QUALITY + (h.quality_ewma - NEUTRAL_QUALITY) * _fade(now - h.quality_at)


def latency_freshness(h: CarrierHealth, now: float) -> float:
    """How much the latency average still counts: 1 when just measured, 0 with no samples."""
    return 0.0 if h.latency_ewma_ms is None else _fade(now - h.latency_at)


def _fade(age: float) -> float:
    return 0.5 ** (max(age, 0.0) / HALF_LIFE_SECONDS)
