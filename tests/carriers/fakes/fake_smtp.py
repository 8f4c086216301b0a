"""Fake SMTP relay: aiosmtpd on 127.0.0.1 (ephemeral port) in the test's event loop."""
from __future__ import annotations

import asyncio
import warnings
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

RCPT_REPLIES = {
    "mailbox_unavailable": "550 5.1.1 Recipient address rejected: User unknown",
    "busy": "451 4.3.0 Temporary local problem, try again later",
}
DATA_REPLIES = {"content_rejected": "554 5.7.1 Message rejected as spam"}


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    login: str | None
    message: EmailMessage


class FakeSmtp:
    """Behaviours: happy, mailbox_unavailable, busy, content_rejected, reply_lost. Requires AUTH."""

    def __init__(self, behaviour: str = "happy", username: str = "relay", password: str = "pw"):
        self.behaviour = behaviour
        self.username, self.password = username, password
        self.received: list[Received] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    # aiosmtpd handler hooks
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.behaviour in RCPT_REPLIES:
            return RCPT_REPLIES[self.behaviour]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.behaviour in DATA_REPLIES:
            return DATA_REPLIES[self.behaviour]
        login = session.auth_data.login.decode() if session.auth_data else None
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), login, message))
        if self.behaviour == "reply_lost":  # queued, but the connection drops before the 250 goes out
            server.transport.close()
        return "250 2.0.0 OK: queued"

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == self.username
              and auth_data.password.decode() == self.password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    def _protocol(self) -> SMTP:
        self.connections += 1
        with warnings.catch_warnings():  # AUTH without TLS is what this loopback fake wants
            warnings.simplefilter("ignore")
            return SMTP(self, hostname="fake-smtp.test", authenticator=self._authenticate,
                        auth_required=True, auth_require_tls=False)

    async def __aenter__(self):
        self._server = await asyncio.get_running_loop().create_server(self._protocol, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self._server.close()
        await self._server.wait_closed()
