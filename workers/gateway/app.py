"""The gateway's aiohttp application: routes and the resources they share."""
from __future__ import annotations

import contextlib
import logging

import aiohttp
from aiohttp import web

from router.settings import Settings
from workers import amqp
from workers.adapters import open_adapters
from workers.gateway import account_api, admin, lists, messages, openapi, ops, privacy_api, queues, usage, webhooks
from workers.gateway.auth import ACCOUNT_CACHE_SECONDS, AccountCache, RateLimiter
from workers.gateway.errors import error_middleware
from workers.gateway.state import APP, GatewayState
from workers.gateway.unconfirmed import Unconfirmed
from workers.ingest.admission import Admission
from workers.ingest.policy import IngestPolicy
from workers.ingest.sender_pools import SenderPools
from workers.store import open_store
from workers.store.group_commit import GroupCommit

log = logging.getLogger("msgroute.gateway")

MESSAGE_PATH = "/v1/messages/{id:msg_[^/]+}"  # router.ids.message_id()


def build_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.gateway.max_body_bytes, middlewares=[error_middleware])
    state = GatewayState(settings=settings)
    app[APP] = state
    app.cleanup_ctx.append(_resources)
    app.router.add_post("/v1/messages", messages.post_message)
    app.router.add_post("/v1/messages/batch", messages.post_batch)
    app.router.add_get("/v1/messages", messages.list_messages)
    # {id} matches message ids only, so /v1/messages/batch is not also a message (nor its 405's Allow
    # GET and DELETE); any other path under /v1/messages is the router's JSON 404
    app.router.add_get(MESSAGE_PATH, messages.get_message)
    app.router.add_delete(MESSAGE_PATH, messages.cancel_message)
    app.router.add_get("/v1/usage", usage.get_usage)
    app.router.add_post("/v1/senders", lists.add_sender)
    app.router.add_get("/v1/senders", lists.list_senders)
    app.router.add_delete("/v1/senders/{id}", lists.remove_sender)
    app.router.add_get("/v1/suppressions", lists.list_suppressions)
    app.router.add_post("/v1/suppressions", lists.add_suppression)
    app.router.add_delete("/v1/suppressions/{address}", lists.remove_suppression)
    app.router.add_post("/webhooks/dlr/{carrier}", webhooks.receipt)
    app.router.add_get("/webhooks/dlr/{carrier}", webhooks.receipt)
    app.router.add_post("/webhooks/inbound/{carrier}", webhooks.inbound)
    app.router.add_get("/v1/privacy/export", privacy_api.export)
    app.router.add_post("/v1/privacy/erase", privacy_api.erase)
    app.router.add_post("/v1/account/review-request", account_api.review_request)
    app.router.add_get("/admin/accounts", admin.list_accounts)
    app.router.add_get("/admin/accounts/{id}", admin.show_account)
    app.router.add_post("/admin/accounts/{id}/suspend", admin.suspend)
    app.router.add_post("/admin/accounts/{id}/reinstate", admin.reinstate)
    app.router.add_post("/admin/accounts/{id}/confirm-suspension", admin.confirm)
    app.router.add_post("/admin/accounts/{id}/rotate-key", admin.rotate_key)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics_endpoint)
    app[queues.MONITOR] = queues.QueueMonitor(settings)
    openapi.install(app)  # GET /openapi.json, rendered at start-up from every registered route
    return app


async def _resources(app: web.Application):
    state = app[APP]
    settings = state.settings
    async with contextlib.AsyncExitStack() as stack:
        state.store = await open_store(settings.store.url)
        stack.push_async_callback(state.store.close)
        state.writes = GroupCommit(state.store)
        state.connection = await amqp.connect(settings, "msgroute gateway")
        stack.push_async_callback(state.connection.close)
        channel = await amqp.open_channel(state.connection)
        await amqp.declare_topology(channel, settings)
        state.publisher = amqp.Publisher(channel, settings.broker.confirm_timeout_seconds)
        # new messages are refused at once while the broker blocks publishers; a carrier's
        # receipt still waits for it, since a carrier may never post a refused receipt again
        state.ingest_publisher = amqp.Publisher(channel, settings.broker.confirm_timeout_seconds,
                                                refuse_while_blocked=True)
        state.unconfirmed = await stack.enter_async_context(Unconfirmed(state.publisher).running())
        state.http = await stack.enter_async_context(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)))
        state.adapters = await stack.enter_async_context(open_adapters(settings, state.http))
        state.accounts = AccountCache(state.store)
        state.rate_limiter = RateLimiter(settings.gateway.account_rate_limit)
        state.sender_pools = SenderPools(state.store)
        state.admission = Admission(settings, app[queues.MONITOR].depths)
        state.policy = IngestPolicy(settings, state.store, publisher=state.publisher, accounts=state.accounts,
                                    account_cache_seconds=ACCOUNT_CACHE_SECONDS)
        monitor = app[queues.MONITOR]
        monitor.connection = state.connection
        await stack.enter_async_context(monitor.running())  # queue depths and consumers, every few seconds
        yield
