"""Codec round trips and request normalisation."""
import pytest

from router import codec, requests
from router.errors import ValidationError
from router.messages import Candidate, Channel, Envelope, RouteDecision, Status, Transition


def test_envelope_and_transition_round_trip():
    envelope = Envelope(id="msg_1", account_id="acc_1", channel=Channel.PUSH, to="tok", created_at="t",
                        data={"k": "v"}, tried=("a",), route=RouteDecision(
                            candidates=(Candidate("a", "eu", 0.5, "0.01", "USD"),), destination="fcm"))
    assert codec.decode_envelope(codec.dumps(envelope)) == envelope
    transition = Transition(message_id="msg_1", status=Status.SENT, occurred_at="t", channel=Channel.SMS, units=2)
    assert codec.decode_transition(codec.dumps(transition)) == transition


@pytest.mark.parametrize("payload, expected", [
    ({"channel": "sms", "to": "+44 7400 123456", "body": "x"}, {"to": "+447400123456"}),
    ({"channel": "sms", "to": "+447400123456", "body": "x", "from": "Acme"}, {"from_": "Acme"}),
    ({"channel": "email", "to": "Alice@EXAMPLE.com", "body": "x"}, {"to": "Alice@example.com"}),
    ({"channel": "push", "to": "a" * 64, "platform": "apns", "title": "t"}, {"platform": "apns"}),
])
def test_normalisation(payload, expected):
    request = requests.parse(payload)
    for field, value in expected.items():
        assert getattr(request, field) == value


@pytest.mark.parametrize("payload, code, field", [
    ([], "invalid_request", None),
    ({"to": "+447400123456"}, "invalid_request", "channel"),
    ({"channel": "sms", "to": "+447400123456"}, "invalid_request", "body"),
    ({"channel": "email", "to": "a@example.com", "subject": "a\nBcc: x@y.z", "body": "x"}, "invalid_request",
     "subject"),
    ({"channel": "email", "to": "a@example.com", "from": "nope", "body": "x"}, "invalid_sender", "from"),
    ({"channel": "sms", "to": "+447400123456", "body": "x", "validity_period": 0}, "invalid_request",
     "validity_period"),
])
def test_refusals(payload, code, field):
    with pytest.raises(ValidationError) as caught:
        requests.parse(payload)
    assert (caught.value.code, caught.value.field) == (code, field)
