"""Ingest-time checks that need I/O: the callback URL's resolved addresses (SSRF), and
automated abuse control (router.abuse) with the suspension it triggers.

`check` raises ValidationError for a request that must be refused and feeds every message
it lets through to the abuse rules, so a message that trips a rule, and every later one, is
refused with 403 `account_suspended` before it is accepted. `refused` sees requests refused
at validation (the invalid-address ratio). `observe` sees every accepted message.
"""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from router import abuse, clock
from router.errors import UnavailableError, ValidationError
from router.messages import Envelope
from router.requests import SendRequest
from router.urls import is_public, literal_address, parse_callback_url
from workers import suspensions
from workers.callbacks import host_is_public
from workers.store import account_events

log = logging.getLogger("msgroute.abuse")
SUSPENDED = "this account is suspended; it may request a review at POST /v1/account/review-request"


class IngestPolicy:
    def __init__(self, settings, store, publisher=None, accounts=None, account_cache_seconds: float = 2.0):
        self.settings = settings
        self.store = store
        self.publisher = publisher  # None: suspensions open a short broker connection of their own
        self.accounts = accounts  # the gateway's AccountCache, forgotten after a suspension
        self.account_cache_seconds = account_cache_seconds  # how stale the caller's view of an account may be
        abuse_settings = settings.abuse
        self.detector = abuse.Detector(abuse.Rules.from_settings(abuse_settings)) if abuse_settings.enabled else None
        self._blocked: dict[str, float] = {}  # account id -> refuse until (monotonic), while a suspension lands
        self._baselines: dict[str, tuple[float, float | None]] = {}  # account id -> (refresh after, per window)
        self._tasks: set[asyncio.Task] = set()

    async def check(self, account: dict, request: SendRequest) -> None:
        if request.callback_url is not None:
            await self.check_callback_url(request.callback_url)
        if self.detector is None:
            return
        account_id = account["id"]
        if self._blocked.get(account_id, 0) > time.monotonic():
            raise ValidationError("account_suspended", SUSPENDED, status=403)
        triggers = self.detector.message(account_id, time.time(), request.to, _texts(request),
                                         self._baseline(account_id))
        if triggers:
            self._suspend(account, triggers)
            raise ValidationError("account_suspended", SUSPENDED, status=403)

    async def check_callback_url(self, url: str) -> None:
        _, host = parse_callback_url(url)
        if self.settings.callbacks.allow_private_networks:
            return
        literal = literal_address(host)
        if (is_public(literal) if literal is not None else await host_is_public(host)):
            return
        raise ValidationError("invalid_callback_url", "callback_url must resolve to a public address",
                              "callback_url")

    def refused(self, account: dict, error: ValidationError) -> None:
        """A request from this account was refused at validation."""
        if self.detector is None or error.code == "account_suspended":
            return
        triggers = self.detector.refused(account["id"], time.time(), error.code)
        if triggers:
            self._suspend(account, triggers)

    def observe(self, account: dict, envelope: Envelope) -> None:
        return None

    def release(self, account_id: str) -> None:
        """An operator reinstated the account: stop refusing it here at once."""
        self._blocked.pop(account_id, None)
        if self.detector is not None:
            self.detector.reset(account_id)

    # --- the volume baseline: from the store, refreshed in the background once per window ---

    def _baseline(self, account_id: str) -> float | None:
        now = time.monotonic()
        refresh_after, value = self._baselines.get(account_id, (0.0, None))
        if now >= refresh_after:
            self._baselines[account_id] = (now + self.settings.abuse.window_seconds, value)
            self._spawn(self._load_baseline(account_id))
        return value

    async def _load_baseline(self, account_id: str) -> None:
        rules = self.settings.abuse
        until = clock.now() - timedelta(seconds=rules.window_seconds)
        since = until - timedelta(seconds=rules.volume_baseline_seconds)
        try:
            count = await account_events.messages_between(self.store, account_id, clock.format_time(since),
                                                          clock.format_time(until))
        except UnavailableError:
            return
        refresh_after = self._baselines.get(account_id, (0.0, None))[0]
        self._baselines[account_id] = (refresh_after, count * rules.window_seconds / rules.volume_baseline_seconds)

    # --- suspension ---

    def _suspend(self, account: dict, triggers: list[abuse.Trigger]) -> None:
        account_id = account["id"]
        if self._blocked.get(account_id, 0) > time.monotonic():
            return  # already under way
        self._blocked[account_id] = float("inf")
        self.detector.reset(account_id)
        self._spawn(self._carry_out(account_id, triggers))

    async def _carry_out(self, account_id: str, triggers: list[abuse.Trigger]) -> None:
        try:
            account = await self.store.get_account(account_id)
            if account is not None and account["status"] == "active":
                await suspensions.suspend(
                    self.store, self.settings, account, [{"rule": t.rule, "detail": t.detail} for t in triggers],
                    automated=True, signals={t.rule: t.signals for t in triggers}, publisher=self.publisher)
        except Exception:  # noqa: BLE001 — a failed suspension must not take ingest down; the next trigger retries
            log.exception("automated suspension failed", extra={"account_id": account_id,
                                                                 "rules": [t.rule for t in triggers]})
            self._blocked.pop(account_id, None)
            return
        if self.accounts is not None:
            self.accounts.forget()
        # the account cache may answer from before the suspension for a moment longer
        self._blocked[account_id] = time.monotonic() + self.account_cache_seconds + 1

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _texts(request: SendRequest) -> tuple[str | None, ...]:
    return (request.subject, request.title, request.body, *sorted((request.data or {}).values()))
