import pytest
from hypothesis import given, strategies as st

from router.health import (CLOSED, HALF_LIFE_SECONDS, HALF_OPEN, HEALTHY, OPEN, WINDOW, CarrierHealth,
                           circuit_state, latency_freshness, quality, record_receipt, record_send)
from router.settings import RoutingSettings

POLICY = RoutingSettings(circuit_failure_threshold=3, circuit_cooldown_seconds=30)


def sends(h, outcomes, now=0.0):
    """outcomes: 'ok', 'transient' or 'permanent', one send each."""
    for outcome in outcomes:
        h = record_send(h, outcome == "ok", outcome == "transient", 100.0, now, POLICY)
    return h


@pytest.mark.parametrize("outcomes, state", [
    ([], CLOSED),
    (["transient"] * 2, CLOSED),
    (["transient"] * 3, OPEN),
    (["transient", "transient", "ok", "transient", "transient"], CLOSED),  # the count restarts
    (["transient", "transient", "permanent", "transient"], CLOSED),  # permanent: an answer
    (["permanent"] * 10, CLOSED),
    # 14 of 27 failed, but only 9 of the last 20:
    (["transient", "transient", "ok"] * 6 + ["transient"] + ["ok"] * 7 + ["transient"], CLOSED),
    (["transient", "transient", "ok"] * 6 + ["transient", "transient"], OPEN),  # 14/20 > 50 %
    (["transient", "ok"] * 10, CLOSED),  # exactly 50 % is not more than half
])
def test_when_the_circuit_opens(outcomes, state):
    assert circuit_state(sends(HEALTHY, outcomes), 1.0, POLICY) == state


def test_error_rate_needs_a_full_window():
    h = sends(HEALTHY, ["transient", "transient", "ok"] * 6)  # 12/18
    assert (h.recent_len, circuit_state(h, 0.0, POLICY)) == (18, CLOSED)


def test_open_half_open_closed_cycle():
    h = sends(HEALTHY, ["transient"] * 3, now=100.0)
    assert (h.state, h.opened_at) == (OPEN, 100.0)
    assert circuit_state(h, 129.9, POLICY) == OPEN
    assert circuit_state(h, 130.0, POLICY) == HALF_OPEN
    still_open = record_send(h, True, False, 50.0, 110.0, POLICY)  # in flight before it opened
    assert circuit_state(still_open, 110.0, POLICY) == OPEN
    reopened = record_send(h, False, True, None, 140.0, POLICY)
    assert (reopened.state, reopened.opened_at) == (OPEN, 140.0)
    assert circuit_state(reopened, 160.0, POLICY) == OPEN
    closed = record_send(h, True, False, 50.0, 140.0, POLICY)
    assert (closed.state, closed.opened_at, closed.consecutive_failures, closed.recent_len) == (CLOSED, None, 0, 0)


def test_permanent_failure_closes_a_half_open_circuit():
    h = sends(HEALTHY, ["transient"] * 3)
    assert record_send(h, False, False, 20.0, 31.0, POLICY).state == CLOSED


def test_functions_return_new_values():
    h = CarrierHealth()
    assert record_send(h, False, True, None, 0.0, POLICY) is not h
    assert h == CarrierHealth() and h.samples == 0
    with pytest.raises(AttributeError):
        h.state = OPEN  # type: ignore[misc]


def test_latency_moving_average_and_freshness():
    h = record_send(HEALTHY, True, False, 200.0, 0.0, POLICY)
    assert (h.latency_ewma_ms, latency_freshness(h, 0.0)) == (200.0, 1.0)
    h = record_send(h, True, False, 300.0, 0.0, POLICY)
    assert h.latency_ewma_ms == pytest.approx(210.0)
    assert record_send(h, False, True, 9000.0, 0.0, POLICY).latency_ewma_ms == h.latency_ewma_ms
    assert latency_freshness(h, HALF_LIFE_SECONDS) == pytest.approx(0.5)
    assert latency_freshness(HEALTHY, 0.0) == 0.0
    # After a long silence the next sample counts almost fully.
    later = record_send(h, True, False, 1000.0, 20 * HALF_LIFE_SECONDS, POLICY)
    assert later.latency_ewma_ms == pytest.approx(1000.0, rel=1e-3)


def test_quality_starts_neutral_and_decays_back():
    assert quality(HEALTHY, 0.0) == 1.0
    h = HEALTHY
    for _ in range(10):
        h = record_receipt(h, False, 0.0)
    assert quality(h, 0.0) == pytest.approx(0.9 ** 10)
    assert 1 - quality(h, HALF_LIFE_SECONDS) == pytest.approx((1 - 0.9 ** 10) / 2)
    assert quality(h, 100 * HALF_LIFE_SECONDS) == pytest.approx(1.0)
    assert quality(record_receipt(h, True, 0.0), 0.0) > quality(h, 0.0)


@given(st.lists(st.sampled_from(["ok", "transient", "permanent"]), max_size=80))
def test_circuit_invariants(outcomes):
    h = sends(HEALTHY, outcomes)
    assert h.samples == len(outcomes)
    assert 0 <= h.recent_len <= WINDOW and h.recent < 1 << WINDOW
    assert h.state in (CLOSED, OPEN) and (h.opened_at is None) == (h.state == CLOSED)
    if len(outcomes) >= 3 and outcomes[-3:] == ["transient"] * 3:
        assert h.state == OPEN  # no cooldown passed: once open, it stays open
    if "transient" not in outcomes:
        assert h.state == CLOSED


@given(st.lists(st.booleans(), max_size=50), st.floats(0, 1e6))
def test_quality_stays_a_share(receipts, later):
    h = HEALTHY
    for delivered in receipts:
        h = record_receipt(h, delivered, 0.0)
    assert 0.0 <= quality(h, later) <= 1.0
