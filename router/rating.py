"""Rate tables (SPEC §3) and money: what a unit costs us and what we charge for it.

Money is Decimal throughout. Totals are quantized to 6 decimal places (micro-units),
ROUND_HALF_EVEN: carrier rates are usually quoted to 4 places and a markup such as 0.25
adds two more, so 6 keeps per-message amounts exact in practice, and half-even rounding
does not drift in one direction when thousands of lines are summed for reconciliation.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Mapping, NamedTuple

from router.settings import PricingSettings

MONEY_PLACES = Decimal("0.000001")


class Rate(NamedTuple):
    """One configured cost per unit, converted once for the per-message path."""

    amount: Decimal
    text: str  # as a decimal string, e.g. "0.0400"
    approx: float  # for scoring only, never for money

    @classmethod
    def of(cls, value: str) -> Rate:
        amount = Decimal(value)
        return cls(amount, str(amount), float(amount))


@dataclass(frozen=True, slots=True)
class RateTable:
    """A carrier's `rates` split by key kind, so a lookup is a few dict probes."""

    prefixes: dict[str, Rate]
    prefix_lengths: tuple[int, ...]  # longest first
    countries: dict[str, Rate]
    default: Rate | None
    currency: str

    @classmethod
    def of(cls, rates: Mapping[str, str]) -> RateTable:
        prefixes, countries, default = {}, {}, None
        for key, value in rates.items():
            if key == "currency":
                continue
            if key == "default":
                default = Rate.of(value)
            elif key.isascii() and key.isdigit():
                prefixes[key] = Rate.of(value)
            else:
                countries[key.upper()] = Rate.of(value)
        lengths = tuple(sorted({len(p) for p in prefixes}, reverse=True))
        return cls(prefixes, lengths, countries, default, rates.get("currency", "USD"))

    def lookup(self, digits: str | None, country: str | None) -> Rate | None:
        """Longest matching prefix, then the country, then `default`; None: not served."""
        if digits:
            for n in self.prefix_lengths:
                rate = self.prefixes.get(digits[:n]) if n <= len(digits) else None
                if rate is not None:
                    return rate
        if country:
            rate = self.countries.get(country.upper())
            if rate is not None:
                return rate
        return self.default


def unit_cost(rates: Mapping[str, str], e164_digits: str | None, country: str | None) -> Decimal | None:
    """The carrier's cost per unit for a destination, or None if it does not serve it."""
    rate = RateTable.of(rates).lookup(e164_digits.lstrip("+") if e164_digits else None, country)
    return None if rate is None else rate.amount


def money(amount: Decimal) -> Decimal:
    return amount.quantize(MONEY_PLACES, rounding=ROUND_HALF_EVEN)


def cost_for(cost_per_unit: Decimal, units: int) -> Decimal:
    return money(cost_per_unit * units)


def price_for(cost_per_unit: Decimal, units: int, channel: str, pricing: PricingSettings) -> Decimal:
    """The customer's price: the channel's fixed price per unit if set, else cost plus markup.

    The result is in `pricing.currency`; the markup path assumes carriers bill in that
    currency too (no exchange rates are applied).
    """
    fixed = pricing.price_per_unit.get(channel)
    if fixed is not None:
        return money(Decimal(fixed) * units)
    return money(cost_per_unit * units * (1 + Decimal(pricing.markup)))
