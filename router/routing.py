"""Route decisions (SPEC §7): which carriers may take a message, best first, and why not the rest.

A carrier of the message's channel is excluded, with the first reason that applies, when
it does not serve a push platform (`platform_not_served`: `fcm` adapters serve FCM
tokens, `apns` adapters APNs tokens; `sandbox` and third-party adapters serve both), has
no rate for the destination (`no_rate`), is in a region the account may not use
(`region_not_allowed`), has an open circuit (`circuit_open`) or is saturated
(`over_capacity`). Half-open carriers stay candidates, after all the closed ones.

Score, lower is better:
    cost_weight * cost' + latency_weight * latency' * freshness + quality_weight * (1 - quality)
where x' = (x - min) / max over the candidates with a value: 0 for the best, 0.5 for one
twice the best, never above 1. Unlike min-max scaling, a 1 % price gap stays a small term
instead of the full weight. Unknown latency counts as the best (0); `freshness` and
`quality` fade stale evidence (router.health). Scores are rounded to 6 places; ties go to
the lower `priority`, then the name. Costs are compared as plain numbers, so carriers
competing for a destination should be rated in one currency. For email and push the
destination key (domain, platform) is looked up like a country key, so a rate table may
price e.g. `apns` apart from `default`.

Rejection: `no_route` when no carrier serves the destination, `region_not_allowed` when
the only ones that do are in disallowed regions. When every allowed carrier is merely
circuit-open or over capacity the message is not rejected: those carriers become the
candidates (over-capacity ones first, then open circuits soonest to half-open first),
since the condition is temporary and retries will find them again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from router.destination import Destination, resolve
from router.health import HALF_OPEN, HEALTHY, OPEN, CarrierHealth, circuit_state, latency_freshness, quality
from router.messages import Candidate, Exclusion, RouteDecision
from router.rating import Rate, RateTable
from router.settings import CarrierSettings, RoutingSettings, Settings

NO_ROUTE, REGION_NOT_ALLOWED = "no_route", "region_not_allowed"
PLATFORM_NOT_SERVED, NO_RATE, CIRCUIT_OPEN, OVER_CAPACITY = (
    "platform_not_served", "no_rate", "circuit_open", "over_capacity")
_TEMPORARY = (CIRCUIT_OPEN, OVER_CAPACITY)
_PUSH_PLATFORMS = {"fcm": frozenset({"fcm"}), "apns": frozenset({"apns"})}
# closed and half-open carriers compete on score (a half-open one needs traffic to probe with);
# open ones come last, when nothing else is left
_RANK = {OPEN: 2}


@dataclass(frozen=True, slots=True)
class _Carrier:
    name: str
    region: str
    priority: int
    rates: RateTable
    platforms: frozenset[str] | None  # push only; None: every platform

    @classmethod
    def of(cls, c: CarrierSettings) -> _Carrier:
        return cls(c.name, c.region, c.priority, RateTable.of(c.rates), _PUSH_PLATFORMS.get(c.adapter))


class Router:
    """The carriers compiled once per channel; `decide` is the per-message path.

    An address that cannot be read raises ValidationError (see router.destination.resolve).
    """

    def __init__(self, settings: Settings):
        self.policy = settings.routing
        self._by_channel: dict[str, list[_Carrier]] = {}
        for c in settings.carriers:
            self._by_channel.setdefault(c.channel, []).append(_Carrier.of(c))

    def decide(self, channel: str, to: str, platform: str | None, allowed_regions: set[str] | None,
               health: Mapping[str, CarrierHealth], now: float,
               saturated: frozenset[str] = frozenset()) -> RouteDecision:
        return _decide(self._by_channel.get(channel, ()), resolve(channel, to, platform, with_type=False),
                       allowed_regions, health, self.policy, now, saturated)


def choose_route(envelope_channel: str, to: str, platform: str | None, carriers: Sequence[CarrierSettings],
                 allowed_regions: set[str] | None, health: Mapping[str, CarrierHealth],
                 policy: RoutingSettings, now: float, saturated: frozenset[str] = frozenset()) -> RouteDecision:
    """One-off form of Router.decide (compiles the rate tables on every call)."""
    compiled = [_Carrier.of(c) for c in carriers if c.channel == envelope_channel]
    dest = resolve(envelope_channel, to, platform, with_type=False)
    return _decide(compiled, dest, allowed_regions, health, policy, now, saturated)


def _decide(carriers: Sequence[_Carrier], dest: Destination, allowed: set[str] | None,
            health: Mapping[str, CarrierHealth], policy: RoutingSettings, now: float,
            saturated: frozenset[str]) -> RouteDecision:
    excluded: list[Exclusion] = []
    usable: list[tuple[_Carrier, Rate, CarrierHealth, str]] = []  # (carrier, rate, health, state)
    held: list[tuple[_Carrier, Rate, CarrierHealth, str]] = []  # usable but for a temporary reason
    serves = False
    for c in carriers:
        if c.platforms is not None and dest.key not in c.platforms:
            excluded.append(Exclusion(c.name, c.region, PLATFORM_NOT_SERVED))
            continue
        rate = c.rates.lookup(dest.digits, dest.key)
        if rate is None:
            excluded.append(Exclusion(c.name, c.region, NO_RATE))
            continue
        serves = True
        if allowed is not None and c.region not in allowed:
            excluded.append(Exclusion(c.name, c.region, REGION_NOT_ALLOWED))
            continue
        h = health.get(c.name, HEALTHY)
        state = circuit_state(h, now, policy)
        reason = CIRCUIT_OPEN if state == OPEN else OVER_CAPACITY if c.name in saturated else None
        if reason is None:
            usable.append((c, rate, h, state))
        else:
            excluded.append(Exclusion(c.name, c.region, reason))
            held.append((c, rate, h, state))
    if not usable and held:
        usable = held
        excluded = [e for e in excluded if e.reason not in _TEMPORARY]
    rejection = None if usable else REGION_NOT_ALLOWED if serves else NO_ROUTE
    return RouteDecision(_ranked(usable, policy, now), tuple(excluded), dest.key, rejection)


def _ranked(usable: list[tuple[_Carrier, Rate, CarrierHealth, str]], policy: RoutingSettings,
            now: float) -> tuple[Candidate, ...]:
    if not usable:
        return ()
    cost_weight, latency_weight, quality_weight = policy.cost_weight, policy.latency_weight, policy.quality_weight
    costs = [rate.approx for _, rate, _, _ in usable]
    cost_lo, cost_hi = min(costs), max(costs)
    latencies = [h.latency_ewma_ms for _, _, h, _ in usable if h.latency_ewma_ms is not None]
    lat_lo, lat_hi = (min(latencies), max(latencies)) if latencies else (0.0, 0.0)
    ranked = []
    for c, rate, h, state in usable:
        score = cost_weight * (rate.approx - cost_lo) / cost_hi if cost_hi > 0 else 0.0
        if h.latency_ewma_ms is not None and lat_hi > 0:
            score += latency_weight * (h.latency_ewma_ms - lat_lo) / lat_hi * latency_freshness(h, now)
        if h.quality_ewma is not None:
            score += quality_weight * (1.0 - quality(h, now))
        score = round(score, 6)
        rank = _RANK.get(state, 0)
        opened = (h.opened_at or 0.0) if state == OPEN else 0.0
        probing = state == HALF_OPEN  # on equal scores a closed circuit goes first
        ranked.append(((rank, opened, score, probing, c.priority, c.name),
                       Candidate(c.name, c.region, score, rate.text, c.rates.currency)))
    ranked.sort(key=lambda pair: pair[0])
    return tuple(candidate for _, candidate in ranked)


def decision_to_json(decision: RouteDecision) -> dict:
    """SPEC §7's `routes explain --format json` shape."""
    return {
        "candidates": [{"carrier": c.carrier, "region": c.region, "score": c.score, "cost": c.cost,
                        "currency": c.currency} for c in decision.candidates],
        "excluded": [{"carrier": e.carrier, "region": e.region, "reason": e.reason} for e in decision.excluded],
    }


def format_decision(decision: RouteDecision) -> str:
    """The decision for people (`msgroute routes explain`)."""
    lines = [f"destination: {decision.destination or '-'}"]
    if decision.rejection:
        lines.append(f"rejected: {decision.rejection}")
    names = [c.carrier for c in decision.candidates] + [e.carrier for e in decision.excluded]
    regions = [c.region for c in decision.candidates] + [e.region for e in decision.excluded]
    width, region_width = max(map(len, names), default=0), max(map(len, regions), default=0)
    if decision.candidates:
        lines.append("candidates (best first; the rest are the failover order):")
    for i, c in enumerate(decision.candidates, 1):
        lines.append(f"  {i:>2}. {c.carrier:<{width}}  {c.region:<{region_width}}  "
                     f"score {c.score:.6f}  cost {c.cost} {c.currency}")
    if decision.excluded:
        lines.append("excluded:")
    for e in decision.excluded:
        lines.append(f"    - {e.carrier:<{width}}  {e.region:<{region_width}}  {e.reason}")
    return "\n".join(lines)
