from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from router.messages import Channel
from router.rating import RateTable, cost_for, price_for, unit_cost
from router.settings import PricingSettings

RATES = {"44": "0.0400", "447": "0.0350", "4479": "0.0300", "1": "0.0079", "FR": "0.0600",
         "default": "0.0500", "currency": "EUR"}


@pytest.mark.parametrize("digits, country, expected", [
    ("447911123456", "GB", "0.0300"),  # longest prefix wins
    ("447400123456", "GB", "0.0350"),
    ("442071234567", "GB", "0.0400"),
    ("+442071234567", "GB", "0.0400"),  # a leading '+' is tolerated
    ("12025550123", "US", "0.0079"),
    ("33612345678", "FR", "0.0600"),  # no prefix: the country
    ("33612345678", "fr", "0.0600"),
    ("4915112345678", "DE", "0.0500"),  # neither: default
    (None, None, "0.0500"),  # email / push
])
def test_unit_cost_order(digits, country, expected):
    assert unit_cost(RATES, digits, country) == Decimal(expected)


@pytest.mark.parametrize("rates, digits, country", [
    ({"44": "0.04", "currency": "USD"}, "33612345678", "FR"),
    ({"GB": "0.04"}, "33612345678", "FR"),
    ({"currency": "USD"}, None, None),
    ({}, "447911123456", "GB"),
])
def test_no_matching_key_means_not_served(rates, digits, country):
    assert unit_cost(rates, digits, country) is None


def test_prefix_longer_than_number_does_not_match():
    assert unit_cost({"4479112345678999": "1", "default": "2"}, "447911", None) == Decimal("2")


def test_table_keeps_currency_and_exact_values():
    table = RateTable.of(RATES)
    assert table.currency == "EUR"
    assert table.lookup("447911123456", None).text == "0.0300"
    assert RateTable.of({"default": "1"}).currency == "USD"


@given(digits=st.from_regex(r"[1-9][0-9]{6,14}", fullmatch=True),
       prefixes=st.dictionaries(st.from_regex(r"[1-9][0-9]{0,3}", fullmatch=True),
                                st.decimals(min_value=0, max_value=1, places=4).map(str), max_size=8))
def test_longest_matching_prefix_wins(digits, prefixes):
    matching = [p for p in prefixes if digits.startswith(p)]
    expected = Decimal(prefixes[max(matching, key=len)]) if matching else None
    assert unit_cost(prefixes, digits, None) == expected


FIXED_SMS = PricingSettings(markup="1", price_per_unit={Channel.SMS: "0.05"})


@pytest.mark.parametrize("cost, units, channel, pricing, expected", [
    ("0.0079", 1, "sms", PricingSettings(markup="0.25"), "0.009875"),
    ("0.0400", 3, "sms", PricingSettings(markup="0.25"), "0.150000"),
    ("0.0400", 2, "sms", PricingSettings(markup="0"), "0.080000"),
    ("0.0123457", 1, "sms", PricingSettings(markup="0"), "0.012346"),
    ("0.0000005", 1, "sms", PricingSettings(markup="0"), "0.000000"),  # half-even
    ("0.0000015", 1, "sms", PricingSettings(markup="0"), "0.000002"),
    ("0.0400", 2, "sms", FIXED_SMS, "0.100000"),  # fixed price ignores cost and markup
    ("0.0001", 1, "email", FIXED_SMS, "0.000200"),  # no fixed price for email: markup
])
def test_price_for(cost, units, channel, pricing, expected):
    price = price_for(Decimal(cost), units, channel, pricing)
    assert isinstance(price, Decimal) and str(price) == expected


def test_price_for_accepts_channel_enum_and_cost_for_quantizes():
    pricing = PricingSettings(price_per_unit={Channel.PUSH: "0.001"})
    assert price_for(Decimal("0.0001"), 2, Channel.PUSH, pricing) == Decimal("0.002")
    assert str(cost_for(Decimal("0.0079"), 3)) == "0.023700"


@given(cost=st.decimals(min_value=0, max_value=10, places=4), units=st.integers(1, 20),
       markup=st.decimals(min_value=0, max_value=2, places=2))
def test_price_is_never_below_cost_with_a_markup(cost, units, markup):
    price = price_for(cost, units, "sms", PricingSettings(markup=str(markup)))
    assert price >= cost_for(cost, units)
    assert price.as_tuple().exponent == -6
