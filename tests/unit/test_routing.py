from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from router.errors import ValidationError
from router.health import CarrierHealth, circuit_state
from router.messages import Candidate, RouteDecision
from router.rating import unit_cost
from router.routing import Router, choose_route, decision_to_json, format_decision
from router.settings import CarrierSettings, RoutingSettings, Settings

POLICY = RoutingSettings()
NOW = 1000.0
UK, US = "+447400123456", "+12025550123"


def carrier(name, rates=None, region="uk-south", channel="sms", adapter="sandbox", priority=100):
    return CarrierSettings(name=name, channel=channel, adapter=adapter, region=region,
                           priority=priority, rates=rates or {"default": "0.01"})


SPEC_EXAMPLE = [
    carrier("twilio-uk", {"44": "0.0400", "1": "0.0079", "default": "0.0500", "currency": "USD"},
            adapter="twilio", priority=1),
    carrier("mail", {"default": "0.0001"}, channel="email", adapter="smtp"),
    carrier("sandbox-sms", {"default": "0.0100", "currency": "USD"}),
]


def route(to, carriers, allowed=None, health=None, saturated=frozenset(), channel="sms", platform=None):
    return choose_route(channel, to, platform, carriers, allowed, health or {}, POLICY, NOW, saturated)


def names(decision):
    return [c.carrier for c in decision.candidates]


def reasons(decision):
    return {e.carrier: e.reason for e in decision.excluded}


def test_spec_example_cheapest_first():
    d = route(UK, SPEC_EXAMPLE)
    assert d == RouteDecision(
        (Candidate("sandbox-sms", "uk-south", 0.0, "0.0100", "USD"),
         Candidate("twilio-uk", "uk-south", 0.75, "0.0400", "USD")), (), "GB", None)


@pytest.mark.parametrize("to, carriers, allowed, rejection, excluded", [
    (UK, [], None, "no_route", {}),
    ("+33612345678", [carrier("uk", {"44": "0.04"})], None, "no_route", {"uk": "no_rate"}),
    (UK, [carrier("uk", {"44": "0.04"})], {"us-east"}, "region_not_allowed", {"uk": "region_not_allowed"}),
    (UK, [carrier("uk", {"44": "0.04"}), carrier("fr", {"FR": "0.02"}, region="us-east")], {"us-east"},
     "region_not_allowed", {"uk": "region_not_allowed", "fr": "no_rate"}),
    (UK, [carrier("uk", {"44": "0.04"})], set(), "region_not_allowed", {"uk": "region_not_allowed"}),
    (UK, [carrier("uk", {"44": "0.04"})], {"uk-south"}, None, {}),
])
def test_rejections(to, carriers, allowed, rejection, excluded):
    d = route(to, carriers, allowed)
    assert (d.rejection, reasons(d)) == (rejection, excluded)
    assert bool(d.candidates) == (rejection is None)


def test_exclusion_reasons_and_half_open_competes_on_score():
    carriers = [carrier(n, {"default": "0.01"}) for n in ("closed", "open", "half", "busy")]
    carriers.append(carrier("far", {"default": "0.001"}, region="us-east"))
    health = {"open": CarrierHealth(state="open", opened_at=NOW - 5),
              "half": CarrierHealth(state="open", opened_at=NOW - 60)}
    d = route(UK, carriers, {"uk-south"}, health, frozenset({"busy"}))
    assert names(d) == ["closed", "half"]
    assert reasons(d) == {"open": "circuit_open", "busy": "over_capacity", "far": "region_not_allowed"}


def test_only_temporarily_unusable_carriers_become_the_candidates():
    carriers = [carrier(n, {"default": "0.01"}) for n in ("open-late", "open-early", "busy", "nope")]
    carriers.append(carrier("far", region="us-east"))
    health = {"open-late": CarrierHealth(state="open", opened_at=NOW - 5),
              "open-early": CarrierHealth(state="open", opened_at=NOW - 20),
              "busy": CarrierHealth(state="open", opened_at=NOW - 60)}  # half-open but saturated
    d = route(UK, carriers, {"uk-south"}, health, frozenset({"busy", "nope"}))
    assert d.rejection is None
    assert names(d) == ["nope", "busy", "open-early", "open-late"]  # half-open "busy" after closed on a tie
    assert reasons(d) == {"far": "region_not_allowed"}


@pytest.mark.parametrize("token, platform, expected", [
    ("ab" * 32, None, ["apns", "sandbox", "other"]),
    ("fcm-token", None, ["fcm", "sandbox", "other"]),
    ("ab" * 32, "fcm", ["fcm", "sandbox", "other"]),
])
def test_push_platforms(token, platform, expected):
    carriers = [carrier(a, {"default": "0.0001"}, channel="push", adapter=a, priority=i)
                for i, a in enumerate(["fcm", "apns", "sandbox", "other"])]
    d = route(token, carriers, channel="push", platform=platform)
    assert names(d) == expected
    assert d.destination == ("fcm" if "fcm" in expected else "apns")
    assert list(reasons(d).values()) == ["platform_not_served"]


def test_email_uses_the_domain_and_other_channels_are_ignored():
    d = route("Someone@Example.com", SPEC_EXAMPLE, channel="email")
    assert (names(d), d.destination, d.excluded) == (["mail"], "example.com", ())


@pytest.mark.parametrize("health, expected", [
    ({}, ["a", "b"]),  # same cost: priority
    ({"a": CarrierHealth(latency_ewma_ms=900.0, latency_at=NOW),
      "b": CarrierHealth(latency_ewma_ms=100.0, latency_at=NOW)}, ["b", "a"]),
    ({"a": CarrierHealth(latency_ewma_ms=900.0, latency_at=NOW)}, ["a", "b"]),  # unknown counts as best
    ({"a": CarrierHealth(quality_ewma=0.5, quality_at=NOW)}, ["b", "a"]),
    ({"a": CarrierHealth(quality_ewma=0.5, quality_at=NOW - 100 * 300)}, ["a", "b"]),  # long forgotten
])
def test_latency_and_quality(health, expected):
    carriers = [carrier("b", priority=2), carrier("a", priority=1)]
    assert names(route(UK, carriers, health=health)) == expected


def test_a_small_price_gap_does_not_outweigh_bad_quality():
    carriers = [carrier("cheap", {"default": "0.0400"}), carrier("good", {"default": "0.0404"})]
    health = {"cheap": CarrierHealth(quality_ewma=0.7, quality_at=NOW)}
    d = route(UK, carriers, health=health)
    assert names(d) == ["good", "cheap"]
    assert [c.score for c in d.candidates] == [pytest.approx(0.0004 / 0.0404, abs=1e-6), 0.15]


def test_ties_by_priority_then_name():
    carriers = [carrier(n, priority=p) for n, p in (("c", 1), ("b", 2), ("a", 2))]
    assert names(route(UK, carriers)) == ["c", "a", "b"]


def test_bad_address_is_a_validation_error():
    with pytest.raises(ValidationError) as err:
        route("447400123456", SPEC_EXAMPLE)
    assert err.value.code == "invalid_phone_number"


def test_router_matches_choose_route():
    settings = Settings(carriers=SPEC_EXAMPLE)
    health = {"twilio-uk": CarrierHealth(state="open", opened_at=NOW)}
    assert Router(settings).decide("sms", UK, None, None, health, NOW) == route(UK, SPEC_EXAMPLE, health=health)
    with pytest.raises(ValidationError) as err:
        Router(settings).decide("fax", UK, None, None, {}, NOW)
    assert err.value.code == "unknown_channel"


def test_json_and_text():
    d = route(UK, SPEC_EXAMPLE + [carrier("us", {"1": "0.007"}, region="us-east")], {"uk-south"})
    assert decision_to_json(d) == {
        "candidates": [
            {"carrier": "sandbox-sms", "region": "uk-south", "score": 0.0, "cost": "0.0100", "currency": "USD"},
            {"carrier": "twilio-uk", "region": "uk-south", "score": 0.75, "cost": "0.0400", "currency": "USD"}],
        "excluded": [{"carrier": "us", "region": "us-east", "reason": "no_rate"}]}
    text = format_decision(d)
    assert "destination: GB" in text and "rejected" not in text
    assert text.index("sandbox-sms") < text.index("twilio-uk") < text.index("no_rate")
    rejected = format_decision(route(UK, [], None))
    assert "rejected: no_route" in rejected and "candidates" not in rejected


# Properties over random configurations ------------------------------------------------

REGIONS = ["uk-south", "eu-west", "us-east"]
NUMBERS = [UK, US, "+33612345678", "+4915112345678"]
rate_values = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("0.1"), places=4).map(str)
rate_tables = st.dictionaries(st.sampled_from(["44", "1", "447", "FR", "default"]), rate_values, max_size=3)


@st.composite
def configs(draw, same_stats=False):
    n = draw(st.integers(1, 6))
    carriers = [CarrierSettings(name=f"c{i}", channel="sms", adapter="sandbox", region=draw(st.sampled_from(REGIONS)),
                                priority=draw(st.integers(1, 3)), rates=draw(rate_tables)) for i in range(n)]
    stats = {} if same_stats else None
    health = {}
    for c in carriers:
        latency = draw(st.none() | st.floats(10, 2000))
        q = draw(st.none() | st.floats(0, 1))
        if same_stats:
            latency, q = stats.setdefault("v", (latency, q))
        opened = draw(st.sampled_from([None, NOW - 1, NOW - 10, NOW - 100]))
        health[c.name] = CarrierHealth(state="closed" if opened is None else "open", opened_at=opened,
                                       latency_ewma_ms=latency, latency_at=NOW - draw(st.sampled_from([0, 600])),
                                       quality_ewma=q, quality_at=NOW)
    allowed = draw(st.none() | st.sets(st.sampled_from(REGIONS)))
    saturated = frozenset(draw(st.sets(st.sampled_from([c.name for c in carriers]))))
    return draw(st.sampled_from(NUMBERS)), carriers, allowed, health, saturated


@given(configs())
def test_never_leaves_allowed_regions_and_accounts_for_every_carrier(config):
    to, carriers, allowed, health, saturated = config
    d = route(to, carriers, allowed, health, saturated)
    assert all(allowed is None or c.region in allowed for c in d.candidates)
    assert sorted(names(d) + [e.carrier for e in d.excluded]) == sorted(c.name for c in carriers)


@given(configs())
def test_rejection_codes(config):
    to, carriers, allowed, health, saturated = config
    d = route(to, carriers, allowed, health, saturated)
    country = "GB" if to == UK else "US" if to == US else "FR" if to.startswith("+33") else "DE"
    servers = [c for c in carriers if unit_cost(c.rates, to[1:], country) is not None]
    if not servers:
        expected = "no_route"
    elif not any(allowed is None or c.region in allowed for c in servers):
        expected = "region_not_allowed"
    else:
        expected = None
    assert d.rejection == expected and bool(d.candidates) == (expected is None)
    assert d.destination == country


@given(configs())
def test_candidates_are_in_score_order_within_each_health_rank(config):
    to, carriers, allowed, health, saturated = config
    d = route(to, carriers, allowed, health, frozenset())
    ranks = [1 if circuit_state(health[c.carrier], NOW, POLICY) == "open" else 0 for c in d.candidates]
    assert ranks == sorted(ranks)  # open circuits (a last resort) after closed and half-open ones
    priority = {c.name: c.priority for c in carriers}
    usable = [c for c, r in zip(d.candidates, ranks) if r == 0]
    probing = {c.carrier: circuit_state(health[c.carrier], NOW, POLICY) == "half_open" for c in usable}
    keys = [(c.score, probing[c.carrier], priority[c.carrier], c.carrier) for c in usable]
    assert keys == sorted(keys)  # a half-open carrier loses a tie to a closed one


@given(configs(same_stats=True))
def test_with_equal_latency_and_quality_the_cheapest_healthy_carrier_wins(config):
    to, carriers, allowed, health, saturated = config
    d = route(to, carriers, allowed, health, saturated)
    # half-open carriers compete too (they need traffic to probe with), but lose ties to closed ones
    state = {c.carrier: circuit_state(health[c.carrier], NOW, POLICY) for c in d.candidates}
    usable = [c for c in d.candidates if state[c.carrier] != "open" and c.carrier not in saturated]
    if usable:
        first = d.candidates[0]
        assert Decimal(first.cost) == min(Decimal(c.cost) for c in usable)
        if state[first.carrier] == "half_open":
            assert not any(state[c.carrier] == "closed" and Decimal(c.cost) == Decimal(first.cost) for c in usable)


@given(configs())
def test_router_and_choose_route_agree(config):
    to, carriers, allowed, health, saturated = config
    router = Router(Settings(carriers=carriers))
    assert router.decide("sms", to, None, allowed, health, NOW, saturated) == route(to, carriers, allowed, health, saturated)
