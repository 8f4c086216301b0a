"""The dispatch worker: sends routed messages through their carrier's adapter.

Per message: skip if already sent (redelivery), expire if past its validity, pace to the
carrier's rate limit, claim the attempt in the dispatch log (one claim wins, so no copy of a
message is sent twice), send, then publish the outcome. A transient error fails over to the
next unused candidate at once; with none left it retries over the candidates after the
next delay in `retry_delays`; `max_attempts` bounds the sends across all carriers. When the
carrier may have taken the message but its answer was lost, the message counts as sent.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from decimal import Decimal

import aiohttp

from router import clock, codec, rating, topology
from router.errors import OutcomeUnknown, PermanentFailure, TemporaryFailure
from router.lifecycle import is_terminal
from router.messages import Channel, Envelope, Status, Transition
from router.privacy import mask_address
from router.segments import count_segments
from router.settings import Settings
from workers import amqp, metrics
from workers.adapters import open_adapters
from workers.health_feed import HealthFeed
from workers.limiter import SenderPacers, SharedPacer
from workers.runtime import message_age_seconds
from carriers.base import SendResult
from workers.store import dispatch_log, open_store
from workers.store.group_commit import GroupCommit

log = logging.getLogger("msgroute.dispatch")
SEND_TIMEOUT_SECONDS = 30
CONNECT_TIMEOUT_SECONDS = 5  # a connect timeout sent nothing (fail over); a read timeout may have (never resend)
SENDER_MAX_WAIT = 0.5  # wait this long at most for a busy pool sender; past it, defer the message


def units_of(envelope: Envelope) -> int:
    if envelope.channel == Channel.SMS:
        return count_segments(envelope.body or "").units
    return 1


class DispatchWorker:
    def __init__(self, settings: Settings, store, publisher: amqp.Publisher, adapters: dict, health: HealthFeed,
                 pacers: dict[str, SharedPacer]):
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.adapters = adapters
        self.health = health
        self.pacers = pacers
        self.rates = {c.name: rating.RateTable.of(c.rates) for c in settings.carriers}
        self.carriers = {c.name: c for c in settings.carriers}
        self.sender_pacers = SenderPacers()
        self.log_writes = GroupCommit(store)  # the claims of concurrent sends share one transaction

    def handler_for(self, carrier: str):
        async def handle(message) -> None:
            envelope = codec.decode_envelope(message.body)
            if message.redelivered and await self._already_done(envelope):
                return
            await self.dispatch(carrier, envelope, redelivered=message.redelivered)
        return handle

    async def _already_done(self, envelope: Envelope) -> bool:
        """A redelivered message may have been sent before the worker died: never send twice."""
        state = (await self.store.current_states([envelope.id])).get(envelope.id)
        if state is None:
            return False
        if state["status"] in (Status.SENT, *[s for s in Status if is_terminal(s)]):
            log.info("redelivered message already handled", extra={"message_id": envelope.id})
            return True
        return False

    async def dispatch(self, carrier: str, envelope: Envelope, redelivered: bool = False) -> None:
        now = clock.now_iso()
        if envelope.expires_at and envelope.expires_at <= now:
            await self._emit(envelope, Status.EXPIRED, carrier, error=("expired", "validity period passed"))
            return
        if self.health.state(carrier) == "open":
            # circuit open: do not call the carrier; move on as a transient failure would
            metrics.dispatch_total.labels(carrier, "circuit_open").inc()
            await self._after_transient(carrier, envelope, "carrier_circuit_open", "carrier circuit is open",
                                        attempted=False)
            return
        if envelope.sender_rate and envelope.sender:
            wait = self.sender_pacers.reserve(envelope.sender, envelope.sender_rate, SENDER_MAX_WAIT)
            if wait is None:
                await self._defer(carrier, envelope)
                return
            await asyncio.sleep(wait)
        pacer = self.pacers.get(carrier)
        if pacer is not None:
            await pacer.wait()
        if not await dispatch_log.claim(self.log_writes, envelope.id, envelope.attempt + 1, carrier, redelivered):
            await self._claimed_elsewhere(carrier, envelope, redelivered)
            return
        if pacer is not None:
            await pacer.admit()
        if envelope.sender_rate and envelope.sender:
            await self.sender_pacers.admit(envelope.sender, envelope.sender_rate)
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(self.adapters[carrier].send(envelope), SEND_TIMEOUT_SECONDS)
        except TemporaryFailure as exc:
            self._record(carrier, started, ok=False, transient=True, outcome="transient")
            await self._after_transient(carrier, envelope, exc.code, exc.message)
            return
        except (OutcomeUnknown, asyncio.TimeoutError) as exc:
            self._record(carrier, started, ok=False, transient=True, outcome="outcome_unknown")
            await self._emit_outcome_unknown(carrier, envelope, str(exc) or "carrier did not answer in time")
            return
        except PermanentFailure as exc:
            self._record(carrier, started, ok=False, transient=False, outcome="permanent")
            log.info("carrier refused message permanently",
                     extra={"message_id": envelope.id, "carrier": carrier, "code": exc.code})
            await self._emit(envelope, Status.FAILED, carrier, error=(exc.code, exc.message),
                             attempt=envelope.attempt + 1)
            return
        self._record(carrier, started, ok=True, transient=False, outcome="sent")
        age = message_age_seconds(envelope.id, time.time() * 1000)
        if age is not None:
            metrics.accept_to_sent.labels(envelope.channel).observe(age)
        await self._emit_sent(carrier, envelope, result)

    async def _defer(self, carrier: str, envelope: Envelope) -> None:
        """The pool sender is busy: park the message in the shortest delay tier instead of holding
        a send slot, so one busy sender never stalls messages from other senders."""
        metrics.dispatch_total.labels(carrier, "sender_busy").inc()
        delay = min(amqp.retry_delays(self.settings))
        await self.publisher.publish_later(delay, topology.dispatch_queue(carrier), codec.dumps(envelope))

    def _record(self, carrier: str, started: float, ok: bool, transient: bool, outcome: str) -> None:
        elapsed = time.perf_counter() - started
        metrics.dispatch_total.labels(carrier, outcome).inc()
        metrics.dispatch_seconds.labels(carrier).observe(elapsed)
        self.health.record_send(carrier, ok, transient, elapsed * 1000)

    async def _claimed_elsewhere(self, carrier: str, envelope: Envelope, redelivered: bool) -> None:
        """This attempt was claimed before. A fresh copy is a duplicate from an earlier hop: the
        copy that holds the claim reports the outcome, so this one is dropped. A redelivered copy
        is ours from before a crash mid-send: the carrier may have it, so it counts as sent."""
        if not redelivered:
            log.info("duplicate copy of a message already being sent; dropped",
                     extra={"message_id": envelope.id, "carrier": carrier})
            metrics.dispatch_total.labels(carrier, "duplicate").inc()
            return
        metrics.dispatch_total.labels(carrier, "outcome_unknown").inc()
        await self._emit_outcome_unknown(carrier, envelope, "redelivered after a crash mid-send")

    async def _emit_outcome_unknown(self, carrier: str, envelope: Envelope, why: str) -> None:
        """The carrier may have the message: count it as sent (without a carrier id), never send it
        twice. Its receipt still maps back by our id; the receipt timeout settles it otherwise."""
        log.warning("carrier outcome unknown; not sending again",
                    extra={"message_id": envelope.id, "carrier": carrier, "reason": why[:200]})
        await self._emit_sent(carrier, envelope, SendResult(carrier_message_id=None))

    async def _emit_sent(self, carrier: str, envelope: Envelope, result) -> None:
        config = self.carriers[carrier]
        candidate = next(c for c in envelope.route.candidates if c.carrier == carrier)
        units = units_of(envelope)
        unit_cost = Decimal(candidate.cost)
        cost = rating.cost_for(unit_cost, units)
        price = rating.price_for(unit_cost, units, envelope.channel, self.settings.pricing)
        transition = Transition(
            message_id=envelope.id, status=Status.SENT, occurred_at=clock.now_iso(), channel=envelope.channel,
            account_id=envelope.account_id, carrier=carrier, region=config.region,
            carrier_message_id=result.carrier_message_id, attempt=envelope.attempt + 1, units=units,
            cost=str(cost), price=str(price), currency=config.currency, destination=envelope.route.destination,
            extra={"receipts": config.receipts, "price_currency": self.settings.pricing.currency,
                   **({"parts": list(result.part_ids)} if getattr(result, "part_ids", ()) else {})})
        log.info("sent", extra={"message_id": envelope.id, "account_id": envelope.account_id, "carrier": carrier,
                                "to": mask_address(envelope.to)})
        await self.publisher.publish("", topology.STATUS_QUEUE, codec.dumps(transition))

    async def _after_transient(self, carrier: str, envelope: Envelope, code: str, message: str,
                               attempted: bool = True) -> None:
        attempts = envelope.attempt + (1 if attempted else 0)
        if attempted:  # known to have failed: a redelivery may try this attempt again
            await dispatch_log.mark(self.log_writes, envelope.id, attempts, carrier, "transient")
        tried = (*envelope.tried, carrier)
        if attempts >= self.settings.routing.max_attempts:
            await self._emit(envelope, Status.FAILED, carrier, error=(code, f"{message}; gave up after "
                                                                            f"{attempts} attempts"),
                             attempt=attempts)
            return
        candidates = envelope.route.candidates
        unused = [i for i, c in enumerate(candidates) if c.carrier not in tried]
        if unused:
            nxt = candidates[unused[0]]
            metrics.failovers_total.labels(carrier).inc()
            moved = dataclasses.replace(envelope, attempt=attempts, candidate=unused[0], tried=tried)
            log.info("failing over", extra={"message_id": envelope.id, "carrier": carrier, "to_carrier": nxt.carrier,
                                            "code": code})
            await self.publisher.publish(topology.DISPATCH_EXCHANGE, nxt.carrier, codec.dumps(moved))
            return
        delays = amqp.retry_delays_configured(self.settings)
        delay = delays[min(envelope.round, len(delays) - 1)]
        first = candidates[0]
        again = dataclasses.replace(envelope, attempt=attempts, candidate=0, tried=(), round=envelope.round + 1)
        metrics.retries_total.labels(carrier).inc()
        log.info("retrying later", extra={"message_id": envelope.id, "carrier": first.carrier, "delay": delay,
                                          "code": code})
        await self.publisher.publish_later(delay, topology.dispatch_queue(first.carrier), codec.dumps(again),
                                           jitter=True)

    async def _emit(self, envelope: Envelope, status: Status, carrier: str, error: tuple[str, str],
                    attempt: int | None = None) -> None:
        config = self.carriers.get(carrier)
        transition = Transition(
            message_id=envelope.id, status=status, occurred_at=clock.now_iso(), channel=envelope.channel,
            account_id=envelope.account_id, carrier=carrier, region=config.region if config else None,
            error_code=error[0], error_message=error[1],
            attempt=envelope.attempt if attempt is None else attempt)
        await self.publisher.publish("", topology.STATUS_QUEUE, codec.dumps(transition))


async def main(settings: Settings, stop: asyncio.Event, carriers: list[str] | None = None) -> None:
    names = [c.name for c in settings.carriers if not carriers or c.name in carriers]
    async with contextlib.AsyncExitStack() as stack:
        store = await open_store(settings.store.url)
        stack.push_async_callback(store.close)
        publishing = await amqp.connect(settings, "msgroute worker dispatch (publish)")
        stack.push_async_callback(publishing.close)
        consuming = await amqp.connect(settings, "msgroute worker dispatch")
        stack.push_async_callback(consuming.close)
        pub_channel = await amqp.open_channel(publishing)
        await amqp.declare_topology(pub_channel, settings)
        publisher = amqp.Publisher(pub_channel, settings.broker.confirm_timeout_seconds)
        http = await stack.enter_async_context(aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_SECONDS, sock_connect=CONNECT_TIMEOUT_SECONDS)))
        adapters = await stack.enter_async_context(open_adapters(settings, http, set(names)))
        health = HealthFeed(settings)
        side_channel = await amqp.open_channel(consuming, confirms=False)
        await health.start(side_channel, stop, publisher=publisher)
        pacers = {}
        for name in names:
            config = settings.carrier(name)
            if config.rate_limit:
                pacers[name] = SharedPacer(config.rate_limit, topology.dispatch_queue(name))
        worker = DispatchWorker(settings, store, publisher, adapters, health, pacers)
        consumers = []
        watchers = [asyncio.create_task(p.watch(side_channel, stop)) for p in pacers.values()]
        watchers.append(asyncio.create_task(_count_processes(side_channel, names, worker.sender_pacers, stop)))
        for name in names:
            config = settings.carrier(name)
            channel = await amqp.open_channel(consuming, prefetch=config.concurrency, confirms=False)
            consumers.append(amqp.consume(
                channel, topology.dispatch_queue(name), worker.handler_for(name), publisher=publisher, stop=stop,
                concurrency=config.concurrency, on_poison=lambda q: metrics.dead_letters.labels(q).inc()))
        log.info("dispatch worker started", extra={"carriers": names})
        await asyncio.gather(*consumers)
        for watcher in watchers:
            watcher.cancel()
        log.info("dispatch worker stopped")


async def _count_processes(channel, carriers: list[str], sender_pacers: SenderPacers, stop: asyncio.Event) -> None:
    """Pool senders are shared out among the dispatch processes serving their carrier."""
    await asyncio.sleep(0.2)
    while not stop.is_set():
        depths = {}
        for name in carriers:
            with contextlib.suppress(Exception):
                depths[name] = (await amqp.queue_counts(channel, topology.dispatch_queue(name)))[1]
        if depths:
            sender_pacers.processes = max(1, max(depths.values()))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
