import phonenumbers
import pytest
from hypothesis import given, strategies as st

from router.destination import Destination, resolve
from router.errors import ValidationError


@pytest.mark.parametrize("to, country, number_type", [
    ("+447400123456", "GB", "mobile"),
    ("+442071234567", "GB", "fixed_line"),
    ("+447911123456", "GG", "mobile"),  # +44 7911 12 is a Guernsey range
    ("+33612345678", "FR", "mobile"),
    ("+33142685300", "FR", "fixed_line"),
    ("+12025550123", "US", "fixed_line_or_mobile"),
    ("+18005550123", "US", "toll_free"),
    ("+15005550001", "US", "personal_number"),  # sandbox test number
    ("+80012345678", "001", "toll_free"),  # non-geographic
    ("+8613800138000", "CN", "mobile"),
])
def test_sms(to, country, number_type):
    assert resolve("sms", to) == Destination("sms", country, to[1:], number_type)


def test_sms_without_type_keeps_country_and_digits():
    for to in ("+447400123456", "+33612345678", "+12025550123", "+15005550001", "+447700900123"):
        full = resolve("sms", to)
        assert resolve("sms", to, with_type=False) == Destination("sms", full.key, full.digits, None)


def test_number_valid_in_no_region_of_a_shared_code_gets_the_main_region():
    assert resolve("sms", "+447700900123").key == "GB"


@pytest.mark.parametrize("to", ["447911123456", "+", "", "+44 7911 123456", "+0441234567",
                                "+9991234567", "+1234567890123456", "+٤٤٧٩١١١٢٣٤٥٦"])
def test_sms_invalid(to):
    with pytest.raises(ValidationError) as err:
        resolve("sms", to)
    assert (err.value.code, err.value.field) == ("invalid_phone_number", "to")


@pytest.mark.parametrize("to, domain", [
    ("someone@Example.COM", "example.com"),
    ("a@b@mail.example.org", "mail.example.org"),
    ("bounce@example.com.", "example.com"),
])
def test_email(to, domain):
    assert resolve("email", to) == Destination("email", domain)


@pytest.mark.parametrize("to", ["no-at-sign", "user@", ""])
def test_email_invalid(to):
    with pytest.raises(ValidationError) as err:
        resolve("email", to)
    assert err.value.code == "invalid_email"


@pytest.mark.parametrize("to, platform, expected", [
    ("a1" * 32, None, "apns"),
    ("A1" * 32, None, "apns"),
    ("a1" * 31, None, "fcm"),
    ("g1" * 32, None, "fcm"),
    ("dGVzdDp0b2tlbg:APA91bH-long-fcm-token", None, "fcm"),
    ("a1" * 32, "fcm", "fcm"),  # an explicit platform wins
    ("short", "APNS", "apns"),
])
def test_push(to, platform, expected):
    assert resolve("push", to, platform) == Destination("push", expected)


def test_push_and_channel_errors():
    with pytest.raises(ValidationError) as err:
        resolve("push", "")
    assert err.value.code == "invalid_device_token"
    with pytest.raises(ValidationError) as err:
        resolve("fax", "+447400123456")
    assert (err.value.code, err.value.field) == ("unknown_channel", "channel")


@given(st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True))
def test_country_matches_phonenumbers(to):
    try:
        number = phonenumbers.parse(to, None)
    except phonenumbers.NumberParseException:
        return
    regions = phonenumbers.region_codes_for_country_code(number.country_code)
    expected = phonenumbers.region_code_for_number(number) or regions[0]
    assert resolve("sms", to, with_type=False).key == expected
    assert resolve("sms", to).key == expected
