"""The abuse rules (router.abuse) on realistic streams: pure, no I/O."""
import pytest

from router.abuse import TRACKED_MESSAGES, Detector, Rules, denied_entry, fingerprint, link_hosts

T0 = 1_800_000_000.0
RULES = Rules(window_seconds=300, same_body_max_recipients=200, invalid_ratio_max=0.5, invalid_min_requests=50,
              volume_spike_factor=20, volume_spike_min_messages=1000,
              denied_url_hosts=frozenset({"parcel-redeliver.example", "bad.example"}))
SPAM = "ROYAL MAIL: your parcel is on hold due to an unpaid shipping fee of 1.99 GBP. Reply YES to reschedule."


def number(i: int) -> str:
    return f"+4479111{i:05d}"


def send(detector, n, body, start=T0, every=0.2, account="acc_1", baseline=None, recipients=number):
    """n messages; returns [(index, triggers)] for the ones that tripped a rule."""
    tripped = []
    for i in range(n):
        triggers = detector.message(account, start + i * every, recipients(i), (None, None, body(i)), baseline)
        if triggers:
            tripped.append((i, triggers))
    return tripped


def test_a_spam_burst_trips_same_body_with_its_signals():
    detector = Detector(RULES)
    tripped = send(detector, 250, lambda i: SPAM)  # one text to a bought list, 5 a second
    index, [trigger] = tripped[0]
    assert index == 200  # the 201st distinct recipient: everything from here on is refused
    assert trigger.rule == "same_body"
    assert trigger.signals == {
        "body_fingerprint": fingerprint(None, None, SPAM), "distinct_recipients": 201, "messages": 201,
        "limit": 200, "window_seconds": 300, "first_at": "2027-01-15T08:00:00.000Z",
        "last_at": "2027-01-15T08:00:40.000Z",
        "sample_recipients": ["+44*******000", "+44*******001", "+44*******002"],
    }
    assert "201 distinct recipients" in trigger.detail
    assert SPAM not in repr(trigger) and number(7) not in repr(trigger)  # nothing personal is kept


def test_the_same_body_is_recognised_through_case_and_spacing():
    detector = Detector(RULES)
    variants = [SPAM, SPAM.lower(), SPAM.replace(" ", "  "), "  " + SPAM + "\n"]
    tripped = send(detector, 201, lambda i: variants[i % 4])
    assert [i for i, _ in tripped] == [200]


def test_an_ordinary_burst_of_distinct_bodies_trips_nothing():
    detector = Detector(RULES)
    otp = send(detector, 600, lambda i: f"Your Acme verification code is {(i * 7919) % 1_000_000:06d}", every=0.1)
    shipping = send(detector, 300, lambda i: f"Order #{40_000 + i} has shipped and arrives Tuesday.",
                    start=T0 + 60, every=0.1, baseline=50.0)
    reminders = send(detector, 150, lambda i: "Reminder: your appointment is tomorrow at 10:00.",
                     start=T0 + 100, recipients=lambda i: number(i % 150))  # one template, 150 < 200 people
    assert otp == shipping == reminders == []


def test_one_body_to_many_recipients_spread_beyond_the_window_trips_nothing():
    detector = Detector(RULES)
    first = send(detector, 150, lambda i: SPAM, every=1)
    later = send(detector, 150, lambda i: SPAM, start=T0 + 600, recipients=lambda i: number(1000 + i))
    assert first == later == []


def test_repeats_to_the_same_recipients_are_not_distinct():
    detector = Detector(RULES)
    assert send(detector, 1000, lambda i: "Your table is ready.", every=0.01, recipients=lambda i: number(i % 50),
                baseline=100.0) == []


@pytest.mark.parametrize("baseline, trips_at", [
    (10.0, 999),  # 1,000 in five minutes against ten per window: a spike
    (100.0, None),  # 1,000 is only ten times this account's normal
    (None, None),  # baseline not known yet: the rule waits
])
def test_volume_spike_against_the_accounts_baseline(baseline, trips_at):
    detector = Detector(RULES)
    tripped = send(detector, 1000, lambda i: f"Flash sale code {i:05d}", every=0.05, baseline=baseline)
    if trips_at is None:
        assert tripped == []
        return
    index, [trigger] = tripped[0]
    assert (index, trigger.rule) == (trips_at, "volume_spike")
    assert trigger.signals["messages_in_window"] == 1000
    assert trigger.signals["baseline_per_window"] == 10.0
    assert trigger.signals["factor"] == 20


def test_high_invalid_number_ratio():
    detector = Detector(RULES)
    triggers = []
    for i in range(60):  # a scraped list: two numbers in three are not numbers at all
        now = T0 + i
        if i % 3:
            triggers += detector.refused("acc_1", now, "invalid_phone_number")
        else:
            triggers += detector.message("acc_1", now, number(i), (None, None, f"Hi {i}"))
    [trigger] = triggers[:1]
    assert trigger.rule == "invalid_ratio"
    assert trigger.signals["requests"] == 50 and trigger.signals["invalid_requests"] == 33
    assert trigger.signals["ratio"] == pytest.approx(0.66)


@pytest.mark.parametrize("invalid_every, total", [(3, 100), (2, 40)])  # a third invalid; or too few requests
def test_invalid_ratio_below_the_limit_or_the_minimum(invalid_every, total):
    detector = Detector(RULES)
    triggers = []
    for i in range(total):
        if i % invalid_every == 0:
            triggers += detector.refused("acc_1", T0 + i, "invalid_email")
        else:
            triggers += detector.message("acc_1", T0 + i, f"user{i}@example.com", (None, f"Hello {i}"))
    assert triggers == []


def test_other_refusals_do_not_count_as_invalid_addresses():
    detector = Detector(RULES)
    assert [t for i in range(100) for t in detector.refused("acc_1", T0 + i, "body_too_long")] == []


@pytest.mark.parametrize("body, host", [
    ("Pay now: https://parcel-redeliver.example/track?id=1", "parcel-redeliver.example"),
    ("Pay now at WWW.Parcel-Redeliver.Example/x", "www.parcel-redeliver.example"),
    ("see http://login.bad.example:8443/a", "login.bad.example"),
    ("go to bad.example.", "bad.example"),
])
def test_denied_url_hosts(body, host):
    [trigger] = Detector(RULES).message("acc_1", T0, number(1), (None, None, body))
    assert trigger.rule == "denied_url"
    assert trigger.signals["host"] == host


@pytest.mark.parametrize("body", [
    "Mail alice@bad.example for help",  # an address, not a link
    "https://notbad.example/x",  # a different domain that ends the same way
    "https://bad.example.org/",  # bad.example is only a prefix here
    "Your code is 1234.",
])
def test_hosts_that_are_not_denied(body):
    assert Detector(RULES).message("acc_1", T0, number(1), (None, None, body)) == []


def test_links_in_subject_title_and_data_count_too():
    detector = Detector(RULES)
    assert detector.message("acc_1", T0, "a@example.com", ("Claim at bad.example", None, "hi"))
    assert detector.message("acc_2", T0, "tok_12345678", (None, None, "hi", "https://bad.example/deep"))


def test_link_hosts_and_denied_entry():
    assert link_hosts("a https://X.example/p b www.y.example, c@z.example 1.5 e.g. ok") == {
        "x.example", "www.y.example", "e.g"}
    assert denied_entry("a.b.bad.example", frozenset({"bad.example"})) == "bad.example"
    assert denied_entry("bad.example.org", frozenset({"bad.example"})) is None


def test_accounts_are_judged_apart_and_reset_forgets():
    detector = Detector(RULES)
    half = send(detector, 150, lambda i: SPAM, account="acc_1")
    other = send(detector, 150, lambda i: SPAM, account="acc_2", recipients=lambda i: number(500 + i))
    assert half == other == []
    detector.reset("acc_1")
    assert send(detector, 150, lambda i: SPAM, start=T0 + 40, account="acc_1",
                recipients=lambda i: number(1000 + i)) == []


def test_idle_accounts_are_dropped():
    detector = Detector(RULES)
    for i in range(100):
        detector.message(f"acc_{i}", T0, number(i), (None, None, "hello"))
    detector.message("acc_x", T0 + 1000, number(1), (None, None, "hello"))
    assert detector.tracked() == 1


def test_memory_per_account_is_bounded_and_volume_still_counts_every_message():
    detector = Detector(RULES)
    # 25,000 distinct bodies in 25 s against a baseline of 1,249.95 per window: the spike needs
    # more than 24,999 messages, more than same_body keeps
    tripped = send(detector, 25_000, lambda i: f"Your code is {i:06d}", every=0.001, baseline=1249.95)
    [(index, [trigger])] = tripped
    assert (index, trigger.rule, trigger.signals["messages_in_window"]) == (24_999, "volume_spike", 25_000)
    assert trigger.signals["first_at"] == "2027-01-15T08:00:00.000Z"
    stream = detector._streams["acc_1"]
    assert len(stream.messages) == TRACKED_MESSAGES  # what same_body keeps, whatever the traffic
    assert sum(len(seen) for seen in stream.recipients.values()) == TRACKED_MESSAGES
    assert len(stream.seconds) <= 26  # per-second counters for the rest


def test_same_body_looks_at_the_latest_tracked_messages():
    detector = Detector(RULES)
    early = send(detector, 150, lambda i: SPAM, every=0.001)
    between = send(detector, TRACKED_MESSAGES, lambda i: f"Order #{i} has shipped", start=T0 + 1, every=0.001,
                   recipients=lambda i: number(i % 1000))
    # 150 + 100 distinct recipients within the window, but the first 150 are no longer among the
    # account's latest messages: the body counts as sent to 100
    late = send(detector, 100, lambda i: SPAM, start=T0 + 30, every=0.001, recipients=lambda i: number(5000 + i))
    assert early == between == late == []
    assert send(detector, 101, lambda i: SPAM, start=T0 + 31, every=0.001,
                recipients=lambda i: number(6000 + i))[0][0] == 100  # 201 distinct among the latest
