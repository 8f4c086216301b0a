"""Accounts: the admin API and its token, key rotation with a grace period, suspension and
review with a human in the loop, and automated abuse control end to end."""
import asyncio
from datetime import timedelta

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from router import clock
from router import settings as settings_module
from router.errors import ValidationError
from router.requests import parse
from tests.engine import DEFAULT_ROUTING, SANDBOX_CARRIERS
from tests.integration.account_tools import HASH_KEY, Api, CallbackSink, EventTap, eventually
from workers.callbacks import verify
from workers.gateway import admin
from workers.gateway.errors import error_middleware
from workers.ingest.policy import IngestPolicy
from workers.gateway.state import APP, GatewayState
from workers.store import open_store

ABUSE = """
[abuse]
window_seconds = 300
same_body_max_recipients = 20
denied_url_hosts = ["parcel-redeliver.example"]
"""
SPAM = "ROYAL MAIL: your parcel is on hold, a 1.99 GBP fee is unpaid. Reply YES to reschedule delivery."


def numbers(start: int, n: int) -> list[str]:
    return [f"+4479111{i:05d}" for i in range(start, start + n)]


async def test_admin_api_needs_its_own_token(make_engine, sqlite_url):
    engine = make_engine(sqlite_url)
    account = engine.create_account("acme")
    async with aiohttp.ClientSession() as http:
        api = Api(http, engine.base_url)
        for key in (None, "wrong-token", account["api_key"]):
            status, body = await api.call("GET", "/admin/accounts", key)
            assert (status, body["error"]["code"]) == (401, "unauthorized"), key
        status, body = await api.admin("GET", "/accounts")
        assert status == 200
        [shown] = body["data"]
        assert shown["id"] == account["id"] and shown["status"] == "active"
        assert not {"api_key_hash", "old_key_hash", "webhook_secret"} & set(shown)
        assert (await api.admin("GET", "/accounts/acc_nope"))[0] == 404
        # an account's own key never reaches the admin API, nor the admin token the customer API
        assert (await api.call("GET", "/v1/messages", "test-admin-token"))[0] == 401


async def test_admin_api_refuses_everything_without_a_configured_token():
    settings = settings_module.from_dict({}, env={})
    assert settings.admin_token == ""
    app = web.Application(middlewares=[error_middleware])
    app[APP] = GatewayState(settings=settings)
    app.router.add_get("/admin/accounts", admin.list_accounts)
    app.router.add_post("/admin/accounts/{id}/reinstate", admin.reinstate)
    async with TestClient(TestServer(app)) as client:
        for method, path in (("GET", "/admin/accounts"), ("POST", "/admin/accounts/acc_1/reinstate")):
            for header in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything"}):
                resp = await client.request(method, path, headers=header)
                assert resp.status == 403
                assert (await resp.json())["error"]["code"] == "forbidden"


async def test_rotated_key_old_one_works_during_the_grace_period(make_engine, sqlite_url):
    engine = make_engine(sqlite_url)
    account = engine.create_account("acme")
    old = account["api_key"]
    message = {"channel": "sms", "to": "+447911123456", "body": "hello"}
    async with aiohttp.ClientSession() as http:
        api = Api(http, engine.base_url)
        status, rotated = await api.admin("POST", f"/accounts/{account['id']}/rotate-key", {"grace_seconds": 3})
        assert status == 200 and rotated["old_key_valid_for_seconds"] == 3
        new = rotated["api_key"]
        assert new != old and new.startswith("mrk_")
        assert (await api.send(new, message))[0] == 202
        assert (await api.send(old, message))[0] == 202  # no downtime: both work for now

        async def old_key_refused():
            return (await api.call("GET", "/v1/messages?limit=1", old))[0] == 401
        await eventually(old_key_refused, timeout=15)
        assert (await api.send(new, message))[0] == 202
        bad = await api.admin("POST", f"/accounts/{account['id']}/rotate-key", {"grace_seconds": -1})
        assert bad[0] == 400 and bad[1]["error"]["field"] == "grace_seconds"
    # the CLI does the same
    rotated = engine.cli("accounts", "rotate-key", account["id"], "--grace", "60")
    assert '"api_key"' in rotated.stdout


async def test_operator_suspension_review_request_confirm_and_reinstate(make_engine, sqlite_url):
    engine = make_engine(sqlite_url)
    account = engine.create_account("acme")
    key, account_id = account["api_key"], account["id"]
    message = {"channel": "sms", "to": "+447911123456", "body": "hello"}
    async with aiohttp.ClientSession() as http, EventTap(engine.amqp_url) as events:
        api = Api(http, engine.base_url)
        assert (await api.call("POST", "/v1/account/review-request", key, {"reason": "why?"}))[0] == 409
        status, sent = await api.send(key, message)
        assert status == 202

        status, shown = await api.admin("POST", f"/accounts/{account_id}/suspend", {"reason": "chargebacks"})
        assert (status, shown["status"]) == (200, "suspended")
        suspended = await events.next("account.suspended")
        assert suspended["reasons"] == [{"rule": "operator", "detail": "chargebacks"}]
        assert suspended["automated"] is False
        status, body = await api.send(key, message)
        assert (status, body["error"]["code"]) == (403, "account_suspended")
        assert (await api.call("GET", f"/v1/messages/{sent['id']}", key))[0] == 200  # reads stay allowed

        status, body = await api.call("POST", "/v1/account/review-request", key, {"reason": "a mistake"})
        assert (status, body["status"]) == (202, "review_requested")
        requested = await events.next("account.review_requested")
        assert (requested["account_id"], requested["reason"]) == (account_id, "a mistake")
        assert (await api.call("POST", "/v1/account/review-request", key, {}))[0] == 400

        status, shown = await api.admin("POST", f"/accounts/{account_id}/confirm-suspension")
        assert shown["status"] == "suspended" and shown["suspension"]["state"] == "confirmed"
        assert (await api.admin("GET", "/accounts?status=suspended"))[1]["data"][0]["id"] == account_id

        status, shown = await api.admin("POST", f"/accounts/{account_id}/reinstate")
        assert (status, shown["status"], shown["review_request"]) == (200, "active", None)
        reinstated = await events.next("account.reinstated")
        assert reinstated["by"] == "admin-api"
        assert (await api.send(key, message))[0] == 202  # at once: the gateway forgot its cached copy
        assert (await api.admin("POST", f"/accounts/{account_id}/reinstate"))[0] == 409

        status, shown = await api.admin("GET", f"/accounts/{account_id}")
        assert [e["type"] for e in shown["history"]] == [
            "account.suspended", "account.review_requested", "account.suspension_confirmed", "account.reinstated"]


@pytest.mark.timeout(180)
async def test_spam_burst_suspends_the_account_end_to_end(make_engine, store_url):
    async with CallbackSink() as sink:
        engine = make_engine(store_url, SANDBOX_CARRIERS + DEFAULT_ROUTING + ABUSE,
                             env={"MSGROUTE_HASH_KEY": HASH_KEY})
        spammer = engine.create_account("spammer", "--callback-url", sink.url)
        shop = engine.create_account("shop")
        async with aiohttp.ClientSession() as http, EventTap(engine.amqp_url) as events:
            api = Api(http, engine.base_url)
            # an ordinary burst: as many messages, each body different
            ordinary = [{"channel": "sms", "to": to, "body": f"Your order #{4000 + i} has shipped."}
                        for i, to in enumerate(numbers(0, 30))]
            status, body = await api.call("POST", "/v1/messages/batch", shop["api_key"], {"messages": ordinary})
            assert status == 202 and all("id" in r for r in body["results"])

            spam = [{"channel": "sms", "to": to, "body": SPAM} for to in numbers(100, 30)]
            status, body = await api.call("POST", "/v1/messages/batch", spammer["api_key"], {"messages": spam})
            assert status == 202
            results = body["results"]
            assert all("id" in r for r in results[:20])  # up to the limit of distinct recipients
            assert {r["error"]["code"] for r in results[20:]} == {"account_suspended"}

            event = await events.next("account.suspended")
            assert event["account_id"] == spammer["id"] and event["automated"] is True
            assert event["reasons"][0]["rule"] == "same_body"
            signals = event["signals"]["same_body"]
            assert signals["distinct_recipients"] == 21 and signals["limit"] == 20
            assert SPAM not in str(event) and numbers(100, 1)[0] not in str(event)

            status, body = await api.send(spammer["api_key"], {"channel": "sms", "to": "+447911123456",
                                                               "body": "a different text"})
            assert (status, body["error"]["code"]) == (403, "account_suspended")

            headers, raw = await sink.next()  # the account hears about it at its callback URL
            assert verify(spammer["webhook_secret"], raw, headers["X-Msgroute-Signature"])
            assert b'"account.suspended"' in raw

            status, shown = await api.admin("GET", f"/accounts/{spammer['id']}")
            assert shown["status"] == "suspended"
            assert shown["suspension"]["state"] == "pending_review"
            assert shown["suspension"]["signals"] == event["signals"]  # explainable from what was recorded
            assert shown["history"][0]["reasons"] == event["reasons"]
            status, shop_shown = await api.admin("GET", f"/accounts/{shop['id']}")
            assert shop_shown["status"] == "active"

            # the account asks for review, an operator reinstates it
            assert (await api.call("POST", "/v1/account/review-request", spammer["api_key"],
                                   {"reason": "our campaign tool looped"}))[0] == 202
            assert (await api.admin("POST", f"/accounts/{spammer['id']}/reinstate"))[0] == 200
            assert (await api.send(spammer["api_key"], {"channel": "sms", "to": "+447911123456",
                                                        "body": "back"}))[0] == 202
        async with aiohttp.ClientSession() as http, http.get(f"{engine.base_url}/metrics") as resp:
            assert "msgroute_accounts_suspended_total 1.0" in await resp.text()


async def test_a_denied_link_suspends_before_the_message_is_accepted(make_engine, sqlite_url):
    engine = make_engine(sqlite_url, SANDBOX_CARRIERS + DEFAULT_ROUTING + ABUSE)
    account = engine.create_account("acme")
    async with aiohttp.ClientSession() as http:
        api = Api(http, engine.base_url)
        status, body = await api.send(account["api_key"], {
            "channel": "sms", "to": "+447911123456", "body": "Pay at https://parcel-redeliver.example/p?x=1"})
        assert (status, body["error"]["code"]) == (403, "account_suspended")

        async def suspended():
            shown = (await api.admin("GET", f"/accounts/{account['id']}"))[1]
            return shown if shown["status"] == "suspended" else None
        shown = await eventually(suspended)
        assert shown["suspension"]["reasons"][0]["rule"] == "denied_url"
        assert shown["suspension"]["signals"]["denied_url"]["host"] == "parcel-redeliver.example"
        assert (await api.call("GET", "/v1/messages", account["api_key"]))[1]["data"] == []


class RecordingPublisher:
    def __init__(self):
        self.published = []

    async def publish_many(self, items):
        self.published += items


async def test_invalid_number_ratio_suspends_through_the_policy(sqlite_url):
    """The policy's side of the invalid-address rule, with a real store and a recording publisher."""
    settings = settings_module.from_dict({"store": {"url": sqlite_url}, "abuse": {"invalid_min_requests": 20}})
    store = await open_store(sqlite_url)
    try:
        account, _ = await store.create_account("scraper", callback_url="https://hooks.example/cb")
        publisher = RecordingPublisher()
        policy = IngestPolicy(settings, store, publisher=publisher)
        for i in range(20):  # two in three refused as invalid; the 20th request trips the rule
            if i % 3 == 0:
                await policy.check(account, parse({"channel": "sms", "to": f"+4479111{i:05d}", "body": f"hi {i}"}))
            else:
                policy.refused(account, ValidationError("invalid_phone_number", "not a number", "to"))
        await asyncio.gather(*policy._tasks)
        stored = await store.get_account(account["id"])
        assert stored["status"] == "suspended"
        with pytest.raises(ValidationError) as refused:
            await policy.check(account, parse({"channel": "sms", "to": "+447911123456", "body": "x"}))
        assert refused.value.status == 403
        keys = [key for _, key, _, _ in publisher.published]
        assert keys == ["account.suspended", "msgroute.callbacks"]
        assert b'"invalid_ratio"' in publisher.published[0][2]
    finally:
        await store.close()


async def test_volume_spike_is_judged_against_the_baseline_in_the_store(sqlite_url):
    settings = settings_module.from_dict({"store": {"url": sqlite_url}, "abuse": {
        "volume_spike_min_messages": 6, "volume_spike_factor": 2, "same_body_max_recipients": 1000}})
    store = await open_store(sqlite_url)
    try:
        steady, _ = await store.create_account("steady")
        new, _ = await store.create_account("new")
        start = clock.now() - timedelta(hours=23)
        history = [(f"msg_old{i:05d}", steady["id"], "sms", "delivered",
                    clock.format_time(start + timedelta(seconds=30 * i))) for i in range(2400)]  # ~8 per window

        def seed(cur):
            cur.executemany("INSERT INTO messages (id, account_id, channel, status, created_at, updated_at) "
                            "VALUES (?, ?, ?, ?, ?, ?)", [(*row, row[-1]) for row in history])
        await store.run(seed)
        policy = IngestPolicy(settings, store, publisher=RecordingPublisher())
        refused = {}
        for account in (steady, new):
            for i in range(8):
                request = parse({"channel": "sms", "to": f"+4479111{i:05d}", "body": f"Sale code {i}"})
                try:
                    await policy.check(account, request)
                except ValidationError as exc:
                    refused.setdefault(account["name"], i)
                    assert exc.code == "account_suspended"
                await asyncio.gather(*policy._tasks)  # the baseline loads in the background
        assert refused == {"new": 5}  # the sixth message: 6 against a baseline of 0
        stored = await store.get_account(new["id"])
        signals = orjson.loads(stored["suspension"])["signals"]["volume_spike"]
        assert (signals["messages_in_window"], signals["baseline_per_window"]) == (6, 0)
        assert (await store.get_account(steady["id"]))["status"] == "active"
    finally:
        await store.close()


@pytest.mark.timeout(120)
async def test_amqp_ingest_is_under_the_same_abuse_control(make_engine, sqlite_url):
    from tests.integration.test_engine import publish_amqp

    engine = make_engine(sqlite_url, SANDBOX_CARRIERS + DEFAULT_ROUTING + ABUSE)
    spammer = engine.create_account("amqp-spammer", "--amqp-user", "guest")
    async with aiohttp.ClientSession() as http, EventTap(engine.amqp_url) as events:
        await publish_amqp(engine.amqp_url, [(n, {"channel": "sms", "to": to, "body": SPAM})
                                             for n, to in enumerate(numbers(100, 30))])
        event = await events.next("account.suspended")
        assert event["account_id"] == spammer["id"] and event["automated"] is True
        assert event["reasons"][0]["rule"] == "same_body"

        async def all_thirty() -> list[dict] | None:
            async with http.get(f"{engine.base_url}/v1/messages?limit=100",
                                headers={"Authorization": f"Bearer {spammer['api_key']}"}) as resp:
                found = (await resp.json())["data"]
            return found if len(found) == 30 else None

        # reads stay allowed for a suspended account; every message is accounted for
        messages = await eventually(all_thirty)
    refused = [m for m in messages if m["status"] == "rejected"]
    assert len(refused) == 10 and {m["error"]["code"] for m in refused} == {"account_suspended"}
