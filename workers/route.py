"""The route worker: accepted messages in, a route decision out to a carrier's dispatch queue.

It also takes AMQP ingest (`msgroute.ingest`, routing key send.<channel>): validates the
request, maps the AMQP user to an account, stores the message, then routes it like any other.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from functools import partial

import orjson

from router import clock, codec, ids, requests, routing, topology
from router.errors import ValidationError
from router.messages import Envelope, Status, Transition
from router.privacy import mask_address
from router.settings import Settings
from workers import amqp, metrics, scheduler
from workers.health_feed import HealthFeed
from workers.ingest import intake
from workers.ingest.admission import Admission
from workers.ingest.policy import IngestPolicy
from workers.ingest.sender_pools import SenderPools
from workers.privacy import suppression_forms
from workers.store import open_store, suppressions
from workers.store.group_commit import GroupCommit
from workers.store.store import idempotency_cutoff, insert_rows

log = logging.getLogger("msgroute.route")
ACCOUNT_CACHE_SECONDS = 10.0


class Accounts:
    """Account lookups with a short cache (regions and AMQP users change rarely)."""

    def __init__(self, store):
        self._store = store
        self._by_id: dict[str, tuple[float, dict | None]] = {}
        self._by_user: dict[str, tuple[float, dict | None]] = {}

    async def by_id(self, account_id: str) -> dict | None:
        return await self._cached(self._by_id, account_id, self._store.get_account)

    async def by_amqp_user(self, user: str) -> dict | None:
        return await self._cached(self._by_user, user, self._store.account_by_amqp_user)

    @staticmethod
    async def _cached(cache: dict, key: str, load) -> dict | None:
        now = time.monotonic()
        hit = cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
        value = await load(key)
        cache[key] = (now + ACCOUNT_CACHE_SECONDS, value)
        return value


class SuppressionChecks:
    """Suppression look-ups for many messages in one query per account.

    While one query runs in the store's thread, the checks that arrive wait and go together
    in the next one: a store round trip per batch instead of one per message, with no added
    wait when the worker is idle.
    """

    def __init__(self, store, forms):
        self._store = store
        self._forms = forms  # the forms an address may be stored under (suppressions.reasons_for)
        self._waiting: dict[str, list[tuple[tuple[str, str], asyncio.Future]]] = {}
        self._flushing: dict[str, asyncio.Task] = {}  # account id -> the task running its queries

    async def reason_for(self, account_id: str, channel: str, address: str) -> str | None:
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(account_id, []).append(((channel, address), future))
        if account_id not in self._flushing:
            self._flushing[account_id] = asyncio.create_task(self._flush(account_id))
        return await future

    async def _flush(self, account_id: str) -> None:
        try:
            while batch := self._waiting.pop(account_id, None):
                try:
                    found = await suppressions.reasons_for(self._store, account_id, [key for key, _ in batch],
                                                           self._forms)
                except Exception as exc:  # noqa: BLE001 — each waiting check raises it, as its own query would
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for key, future in batch:
                    if not future.done():
                        future.set_result(found.get(key))
        finally:  # no await since the last empty pop: a check added now starts a new task
            del self._flushing[account_id]


def allowed_regions(account: dict | None) -> set[str] | None:
    if not account or not account.get("regions"):
        return None
    return set(account["regions"].split(","))


class RouteWorker:
    def __init__(self, settings: Settings, store, publisher: amqp.Publisher, health: HealthFeed):
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.health = health
        self.accounts = Accounts(store)
        self.inserts = GroupCommit(store)  # concurrent AMQP ingest inserts share one transaction
        self.suppressions = SuppressionChecks(store, partial(suppression_forms, settings))
        self.router = routing.Router(settings)
        # AMQP ingest gets the same abuse control as HTTP ingest: a publisher cannot bypass it
        self.policy = IngestPolicy(settings, store, publisher=publisher,
                                   account_cache_seconds=ACCOUNT_CACHE_SECONDS)
        self.sender_pools = SenderPools(store)  # and the account's sender pool, as over HTTP
        self.admission = Admission(settings, health.backlogs)  # and a carrier's backlog (would_expire)

    async def handle_envelope(self, message) -> None:
        envelope = codec.decode_envelope(message.body)
        # A redelivery (a confirm timed out, or a worker died before its ack) may have been routed
        # already. Once the dispatch worker has recorded a send, routing it again is pointless. If
        # only `routed` is recorded, its dispatch copy may still have been refused (a full queue
        # nacks it while the status copy goes through), so it goes out again (the dispatch log
        # drops a second copy), but the decision is not counted twice.
        recorded = await self._recorded_status(envelope) if message.redelivered else None
        if recorded not in (None, Status.QUEUED, Status.SCHEDULED, Status.ROUTED):
            log.info("redelivered message already dispatched", extra={"message_id": envelope.id,
                                                                       "status": recorded})
            return
        await self.route(envelope, count=recorded != Status.ROUTED)

    async def _recorded_status(self, envelope: Envelope) -> str | None:
        state = (await self.store.current_states([envelope.id])).get(envelope.id)
        return state["status"] if state else None

    async def route(self, envelope: Envelope, count: bool = True) -> None:
        now = clock.now_iso()
        if envelope.expires_at and envelope.expires_at <= now:
            await self._transition(envelope, Status.EXPIRED, now, error=("expired", "validity period passed"))
            return
        account = await self.accounts.by_id(envelope.account_id)
        reason = await self.suppressions.reason_for(envelope.account_id, envelope.channel, envelope.to)
        if reason is not None:  # suppressed after it was accepted (an opt-out, an unregistered token)
            code = suppressions.refusal_code(reason)
            metrics.messages_rejected.labels(envelope.channel, code).inc()
            await self._transition(envelope, Status.REJECTED, now, error=(code, f"recipient suppressed ({reason})"))
            return
        try:
            decision = self.router.decide(envelope.channel, envelope.to, envelope.platform,
                                          allowed_regions(account), self.health.snapshot(), time.time(),
                                          self.health.saturated())
        except ValidationError as exc:  # validated at ingest; kept for envelopes published by hand
            await self._transition(envelope, Status.REJECTED, now, error=(exc.code, exc.message))
            return
        if decision.rejection:
            metrics.messages_rejected.labels(envelope.channel, decision.rejection).inc()
            await self._transition(envelope, Status.REJECTED, now, error=(decision.rejection, _REASONS.get(
                decision.rejection, decision.rejection)), destination=decision.destination)
            return
        first = decision.candidates[0]
        routed = dataclasses.replace(envelope, route=decision, candidate=0, tried=())
        if count:
            metrics.messages_routed.labels(envelope.channel, first.carrier, first.region).inc()
        transition = Transition(message_id=envelope.id, status=Status.ROUTED, occurred_at=now,
                                channel=envelope.channel, account_id=envelope.account_id, carrier=first.carrier,
                                region=first.region, destination=decision.destination)
        await self.publisher.publish_many([
            (topology.DISPATCH_EXCHANGE, first.carrier, codec.dumps(routed), None),
            ("", topology.STATUS_QUEUE, codec.dumps(transition), None),
        ])

    async def _transition(self, envelope: Envelope, status: Status, now: str, error: tuple[str, str],
                          destination: str | None = None) -> None:
        transition = Transition(message_id=envelope.id, status=status, occurred_at=now, channel=envelope.channel,
                                account_id=envelope.account_id, error_code=error[0], error_message=error[1],
                                destination=destination)
        log.info(f"message {status}", extra={"message_id": envelope.id, "account_id": envelope.account_id,
                                              "reason": error[0]})
        await self.publisher.publish("", topology.STATUS_QUEUE, codec.dumps(transition))

    async def handle_amqp_ingest(self, message) -> None:
        """A send request published straight to msgroute.ingest."""
        user = message.user_id
        account = await self.accounts.by_amqp_user(user) if user else None
        if account is None:
            await self._reject_copy(message, "unauthorized: no account is mapped to this AMQP user_id")
            return
        payload = None
        try:
            try:
                payload = orjson.loads(message.body)
            except orjson.JSONDecodeError:
                raise ValidationError("invalid_json", "body is not valid JSON") from None
            request = requests.parse(payload)
            if request.account_id not in (None, account["id"]):
                raise ValidationError("invalid_request", "account_id does not belong to this AMQP user",
                                      "account_id")
            if account["status"] != "active":
                raise ValidationError("account_suspended", "this account is suspended", status=403)
            if not message.redelivered:  # a redelivery was counted (and admitted) the first time round
                await self.policy.check(account, request)
                self.admission.check(request, allowed_regions(account))
            request, sender_rate = await self.sender_pools.apply(account["id"], request)
        except ValidationError as exc:
            self.policy.refused(account, exc)
            await self._reject_stored(message, account, payload if isinstance(payload, dict) else None, exc)
            return
        envelope, row = intake.accept(request, account["id"], message.message_id, account.get("callback_url"),
                                      sender_rate)
        cutoff = idempotency_cutoff()
        [replay] = await self.inserts.run(lambda cur: insert_rows(cur, [row], cutoff))
        if replay is not None:
            return  # a redelivery or a republish of a message already accepted
        metrics.messages_accepted.labels(envelope.channel).inc()
        log.info("accepted over AMQP", extra={"message_id": envelope.id, "account_id": account["id"],
                                               "to": mask_address(envelope.to)})
        if row["status"] == Status.QUEUED:
            await self.route(envelope)

    async def _reject_stored(self, message, account: dict, payload: dict | None, error: ValidationError) -> None:
        """Record the refused message as `rejected` (if we can tell its channel) and copy it for the publisher."""
        channel = payload.get("channel") if payload else None
        if channel in ("sms", "email", "push"):
            now = clock.now_iso()
            row = {"id": ids.message_id(), "account_id": account["id"], "channel": channel,
                   "to_addr": str(payload.get("to"))[:320] if payload.get("to") is not None else None,
                   "status": Status.REJECTED, "idempotency_key": message.message_id, "attempt": 0,
                   "created_at": now, "updated_at": now, "error_code": error.code, "error_message": error.message,
                   "metadata": orjson.dumps(payload["metadata"]).decode()
                   if isinstance(payload.get("metadata"), dict) else None}
            await self.store.insert_messages([row])
        metrics.messages_rejected.labels(channel if channel in ("sms", "email", "push") else "unknown",
                                         error.code).inc()
        await self._reject_copy(message, f"{error.code}: {error.message}")

    async def _reject_copy(self, message, reason: str) -> None:
        headers = dict(message.headers or {})
        headers["x-reject-reason"] = reason
        # as published (SPEC §5), with its message_id so the publisher can match it to its send
        await self.publisher.publish("", topology.REJECTED_QUEUE, message.body, headers=headers,
                                     message_id=message.message_id,
                                     content_type=message.content_type or "application/json")


_REASONS = {
    "no_route": "no carrier serves this destination",
    "region_not_allowed": "only carriers in regions this account may not use serve this destination",
}


async def main(settings: Settings, stop: asyncio.Event) -> None:
    async with contextlib.AsyncExitStack() as stack:
        store = await open_store(settings.store.url)
        stack.push_async_callback(store.close)
        publishing = await amqp.connect(settings, "msgroute worker route (publish)")
        stack.push_async_callback(publishing.close)
        consuming = await amqp.connect(settings, "msgroute worker route")
        stack.push_async_callback(consuming.close)
        pub_channel = await amqp.open_channel(publishing)
        await amqp.declare_topology(pub_channel, settings)
        publisher = amqp.Publisher(pub_channel, settings.broker.confirm_timeout_seconds)
        health = HealthFeed(settings)
        await health.start(await amqp.open_channel(consuming, confirms=False), stop, watch_capacity=True)
        worker = RouteWorker(settings, store, publisher, health)
        channel = await amqp.open_channel(consuming, prefetch=200)
        on_poison = lambda queue: metrics.dead_letters.labels(queue).inc()  # noqa: E731
        log.info("route worker started")
        await asyncio.gather(
            scheduler.run(store, publisher, stop, settings.routing.requeue_stranded_after_seconds),
            amqp.consume(channel, topology.ROUTE_QUEUE, worker.handle_envelope, publisher=publisher, stop=stop,
                          concurrency=100, on_poison=on_poison),
            amqp.consume(channel, topology.AMQP_INGEST_QUEUE, worker.handle_amqp_ingest, publisher=publisher,
                         stop=stop, concurrency=50, on_poison=on_poison),
        )
        log.info("route worker stopped")
