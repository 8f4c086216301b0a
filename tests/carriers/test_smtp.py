import pytest

from carriers.base import CarrierConfig, InboundRequest, OutcomeUnknown, PermanentFailure, TemporaryFailure
from carriers.smtp import SmtpAdapter
from router.errors import ConfigError
from router.messages import Channel, Envelope
from tests.carriers.fakes.fake_smtp import FakeSmtp


def adapter(port: int, **settings) -> SmtpAdapter:
    settings = {"host": "127.0.0.1", "port": port, "username": "relay", "password": "pw",
                "from": "Alerts <alerts@example.com>", "timeout": 2, **settings}
    return SmtpAdapter(CarrierConfig("smtp-relay", "email", settings), http=None)


def email(**fields) -> Envelope:
    return Envelope(**{"id": "msg_01", "account_id": "acc_1", "channel": Channel.EMAIL,
                       "to": "ada@example.org", "subject": "Your receipt",
                       "body": "Thanks for your order.\n", "created_at": "2024-05-01T12:00:00.000Z",
                       **fields})


async def test_send_delivers_the_email_over_smtp(monkeypatch):
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret")
    async with FakeSmtp(password="s3cret") as fake:
        smtp = adapter(fake.port, password="env:TEST_SMTP_PASSWORD")
        result = await smtp.send(email())
        await smtp.aclose()

    [received] = fake.received
    assert received.login == "relay"
    assert received.mail_from == "alerts@example.com"
    assert received.rcpt_tos == ["ada@example.org"]
    message = received.message
    assert message["From"] == "Alerts <alerts@example.com>"
    assert message["To"] == "ada@example.org"
    assert message["Subject"] == "Your receipt"
    assert message["X-Msgroute-Message-Id"] == "msg_01"
    assert message["Message-ID"] == result.carrier_message_id == "<msg_01@example.com>"
    assert message.get_content().replace("\r\n", "\n") == "Thanks for your order.\n"
    assert result.units == 1


async def test_connections_are_reused():
    async with FakeSmtp() as fake:
        smtp = adapter(fake.port)
        await smtp.send(email(id="msg_01"))
        await smtp.send(email(id="msg_02"))
        await smtp.aclose()
    assert [r.message["X-Msgroute-Message-Id"] for r in fake.received] == ["msg_01", "msg_02"]
    assert fake.connections == 1


async def test_a_4xx_reply_is_temporary():
    async with FakeSmtp("busy") as fake:
        with pytest.raises(TemporaryFailure, match="451"):
            await adapter(fake.port).send(email())


async def test_a_connection_lost_after_the_content_went_out_is_an_unknown_outcome():
    # the relay queued it; sending again would deliver a second copy
    async with FakeSmtp("reply_lost") as fake:
        with pytest.raises(OutcomeUnknown) as caught:
            await adapter(fake.port).send(email())
    assert caught.value.code == "carrier_outcome_unknown"
    assert len(fake.received) == 1


async def test_a_refusal_before_the_content_is_temporary_and_the_next_send_starts_clean():
    async with FakeSmtp("busy") as fake:  # refused at RCPT: the content never went out
        adapter_ = adapter(fake.port)
        with pytest.raises(TemporaryFailure):
            await adapter_.send(email())
        fake.behaviour = "happy"  # a pooled connection that failed before DATA starts clean next time
        await adapter_.send(email())
    assert len(fake.received) == 1


async def test_an_unreachable_server_is_temporary(closed_port):
    with pytest.raises(TemporaryFailure):
        await adapter(closed_port).send(email())


async def test_a_refused_login_is_temporary_so_another_carrier_can_take_it():
    async with FakeSmtp() as fake:
        with pytest.raises(TemporaryFailure, match="535"):
            await adapter(fake.port, password="wrong").send(email())


async def test_an_unknown_mailbox_is_permanent():
    async with FakeSmtp("mailbox_unavailable") as fake:
        with pytest.raises(PermanentFailure) as caught:
            await adapter(fake.port).send(email())
    assert caught.value.code == "invalid_email"


async def test_rejected_content_is_permanent():
    async with FakeSmtp("content_rejected") as fake:
        with pytest.raises(PermanentFailure) as caught:
            await adapter(fake.port).send(email())
    assert caught.value.code == "carrier_rejected"


def test_smtp_has_no_receipts_so_every_receipt_is_refused():
    smtp = adapter(25)
    request = InboundRequest("POST", "https://msgroute.example.com/webhooks/dlr/smtp-relay",
                             {"content-type": "application/json"}, b'{"id": "x", "status": "delivered"}')
    assert smtp.verify_receipt(request) is False
    assert smtp.parse_receipt(request) == []


@pytest.mark.parametrize("settings, problem", [({"host": ""}, "host"), ({"timeout": "soon"}, "timeout")])
def test_bad_settings_are_a_config_error(settings, problem):
    with pytest.raises(ConfigError, match=problem):
        adapter(25, **settings)
