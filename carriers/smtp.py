"""Email over SMTP (aiosmtplib).

Each message is a plain-text EmailMessage carrying our message id in
`X-Msgroute-Message-Id` and a Message-ID derived from it, which is also the carrier
message id. Connections are reused: a few idle ones are kept for the next sends.

SMTP has no delivery receipts (bounces arrive later as mail), so this adapter accepts
none.
"""
from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, parseaddr

import aiohttp
import aiosmtplib

from carriers.base import (
    CarrierConfig, InboundRequest, OutcomeUnknown, PermanentFailure, Receipt, SendResult, TemporaryFailure,
    resolve_secret,
)
from router.errors import ConfigError
from router.messages import Envelope

MAX_IDLE_CONNECTIONS = 4
MAILBOX_ERRORS = {550, 551, 553}  # mailbox unavailable, not local, name not allowed


def _bool(value, default: bool | None) -> bool | None:
    if value is None or value == "":
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class SmtpAdapter:
    def __init__(self, config: CarrierConfig, http: aiohttp.ClientSession):
        self.config = config
        settings = {k: resolve_secret(v) for k, v in config.settings.items()}
        if not settings.get("host"):
            raise ConfigError([f"carrier {config.name}: missing setting host"])
        use_tls = bool(_bool(settings.get("use_tls"), False))
        # Unset: upgrade with STARTTLS when the server offers it; true: require it; false: never.
        starttls = False if use_tls else _bool(settings.get("starttls"), None)
        try:
            port = int(settings.get("port") or (465 if use_tls else 587 if starttls else 25))
            timeout = float(settings.get("timeout") or 30)
        except (TypeError, ValueError) as exc:
            raise ConfigError([f"carrier {config.name}: port and timeout must be numbers ({exc})"]) from exc
        self._options = dict(
            hostname=str(settings["host"]), port=port, timeout=timeout,
            use_tls=use_tls, start_tls=starttls,
            username=settings.get("username") or None, password=settings.get("password") or None,
        )
        self._from = settings.get("from")
        self._idle: list[_SMTP] = []

    async def send(self, envelope: Envelope) -> SendResult:
        sender = envelope.sender or self._from
        if not sender:
            raise PermanentFailure("invalid_sender", "smtp: no sender (set `from`)")
        try:
            message = self._build(envelope, str(sender))
        except (ValueError, TypeError) as exc:
            raise PermanentFailure("carrier_rejected", f"smtp: cannot build the email: {exc}") from exc
        client, sent = None, False
        try:
            client = await self._connection()
            client.content_may_be_sent = False
            await client.send_message(message, sender=parseaddr(str(sender))[1], recipients=[envelope.to])
            sent = True
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            if client is not None and client.content_may_be_sent \
                    and not isinstance(exc, aiosmtplib.SMTPResponseException):
                # the connection failed after DATA: the server may have queued the email, and a
                # second send would deliver it twice (the Message-ID only helps receivers that dedupe)
                raise OutcomeUnknown("carrier_outcome_unknown", f"smtp: {type(exc).__name__}: {exc}") from exc
            raise _error(exc) from exc
        finally:
            if client is not None and sent:
                self._release(client)
            elif client is not None:
                client.close()
        return SendResult(carrier_message_id=message["Message-ID"], units=1)

    def _build(self, envelope: Envelope, sender: str) -> EmailMessage:
        domain = parseaddr(sender)[1].rpartition("@")[2] or "msgroute.invalid"
        message = EmailMessage()
        message["From"] = sender
        message["To"] = envelope.to
        message["Subject"] = envelope.subject or ""
        message["Date"] = formatdate(usegmt=True)
        # Derived from our id, so a resend after a lost reply carries the same Message-ID
        # and receiving systems can drop the duplicate.
        message["Message-ID"] = f"<{envelope.id}@{domain}>"
        message["X-Msgroute-Message-Id"] = envelope.id
        message.set_content(envelope.body or "")
        return message

    async def _connection(self) -> _SMTP:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
        client = _SMTP(**self._options)
        try:
            await client.connect()  # also says EHLO, upgrades to TLS and logs in as configured
        except BaseException:
            client.close()
            raise
        return client

    def _release(self, client: _SMTP) -> None:
        if len(self._idle) < MAX_IDLE_CONNECTIONS:
            self._idle.append(client)
        else:
            client.close()

    def verify_receipt(self, request: InboundRequest) -> bool:
        return False

    def parse_receipt(self, request: InboundRequest) -> list[Receipt]:
        return []

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()


class _SMTP(aiosmtplib.SMTP):
    """Remembers whether DATA began, after which a lost connection leaves the outcome unknown."""

    content_may_be_sent = False

    async def data(self, *args, **kwargs):
        self.content_may_be_sent = True
        return await super().data(*args, **kwargs)


def _error(exc: BaseException):
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    code = getattr(exc, "code", None)
    message = f"smtp: {code or type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused) and code in MAILBOX_ERRORS:
        return PermanentFailure("invalid_email", message)
    # A refused login or a refused connection is about this server, not this message:
    # temporary, so that another carrier can take it.
    if isinstance(exc, (aiosmtplib.SMTPAuthenticationError, aiosmtplib.SMTPConnectError)):
        return TemporaryFailure("carrier_unavailable", message)
    if isinstance(code, int) and 500 <= code < 600:
        return PermanentFailure("carrier_rejected", message)
    return TemporaryFailure("carrier_unavailable", message)
