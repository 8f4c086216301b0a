"""Privacy: content retention by the workers' periodic sweep, and data-subject export and
erasure over HTTP and the CLI (scoped to one account, idempotent, nothing identifying left)."""
import subprocess
import sys
from datetime import timedelta

import aiohttp
import orjson
import pytest

from router import clock
from router.privacy import pseudonym
from tests.engine import DEFAULT_ROUTING, SANDBOX_CARRIERS, wait_terminal
from tests.integration.account_tools import HASH_KEY, Api, eventually
from workers.store import open_store, suppressions
from workers.store.privacy import erase_subject

KEY_ENV = {"MSGROUTE_HASH_KEY": HASH_KEY}
NUMBER, EMAIL, TOKEN = "+447863112358", "ada.lovelace@example.com", "devtoken-0a1b2c3d4e5f"
SECRET = "Ada, your test result is ready: negative"


async def dump(store_url: str, message_ids: list[str]) -> str:
    """Every stored row that belongs to these messages, as one string to search."""
    store = await open_store(store_url)
    try:
        marks = ", ".join("?" for _ in message_ids)
        rows = []
        for table, column in (("messages", "id"), ("status_history", "message_id"), ("usage_records", "message_id")):
            rows += await store.query(f"SELECT * FROM {table} WHERE {column} IN ({marks})", message_ids)
        rows += await store.query("SELECT * FROM erasures")
        rows += await store.query("SELECT * FROM suppressions")
        return orjson.dumps(rows, default=str).decode()
    finally:
        await store.close()


async def send_all(api: Api, key: str, messages: list[dict]) -> list[str]:
    ids = []
    for message in messages:
        status, body = await api.send(key, message)
        assert status == 202, body
        ids.append(body["id"])
    return ids


@pytest.mark.timeout(240)
async def test_erase_then_export_returns_nothing_identifying(make_engine, store_url):
    engine = make_engine(store_url, env=KEY_ENV)
    alice, bob = engine.create_account("alice"), engine.create_account("bob")
    async with aiohttp.ClientSession() as http:
        api = Api(http, engine.base_url)
        ids = await send_all(api, alice["api_key"], [
            {"channel": "sms", "to": NUMBER, "body": SECRET, "metadata": {"patient": "ada"}},
            {"channel": "sms", "to": NUMBER, "body": "Reminder: appointment on Friday"},
            {"channel": "sms", "to": "+447863112359", "body": "someone else"},
        ])
        [bobs] = await send_all(api, bob["api_key"], [{"channel": "sms", "to": NUMBER, "body": "bob's own"}])
        done = await wait_terminal(http, engine.base_url, alice["api_key"], ids)
        await wait_terminal(http, engine.base_url, bob["api_key"], [bobs])
        assert {m["status"] for m in done.values()} == {"delivered"}

        status, exported = await api.call("GET", "/v1/privacy/export?to=%2B447863112358", alice["api_key"])
        assert status == 200
        assert [m["id"] for m in exported["messages"]] == ids[:2]
        assert exported["messages"][0]["body"] == SECRET
        assert [m["status"] for m in exported["messages"][0]["status_history"]][-1] == "delivered"
        assert {u["message_id"] for u in exported["usage_records"]} == set(ids[:2])

        store = await open_store(engine.store_url)  # the number opted out of alice's messages (STOP)
        await suppressions.add(store, [(alice["id"], "sms", NUMBER, "opted_out")])
        await store.close()
        status, exported = await api.call("GET", "/v1/privacy/export?to=%2B447863112358", alice["api_key"])
        assert [(s["channel"], s["reason"]) for s in exported["suppressions"]] == [("sms", "opted_out")]

        status, erased = await api.call("POST", "/v1/privacy/erase", alice["api_key"], {"to": NUMBER})
        assert status == 200
        assert erased == {"account_id": alice["id"], "pseudonym": pseudonym(HASH_KEY.encode(), NUMBER),
                          "messages_erased": 2, "suppressions_erased": 1}

        status, exported = await api.call("GET", "/v1/privacy/export?to=%2B447863112358", alice["api_key"])
        assert (status, exported["messages"], exported["usage_records"], exported["suppressions"]) == (
            200, [], [], [])
        assert NUMBER not in str(exported) and SECRET not in str(exported)

        status, message = await api.call("GET", f"/v1/messages/{ids[0]}", alice["api_key"])
        assert message["to"] == erased["pseudonym"]
        assert (message["body"], message["metadata"]) == (None, None)
        assert (message["status"], message["carrier"], message["units"]) == ("delivered", "sms-uk", 1)
        assert message["price"] is not None  # billing keeps what it needs

        # idempotent, whatever form of the number is given
        status, again = await api.call("POST", "/v1/privacy/erase", alice["api_key"], {"to": "+44 7863 112358"})
        assert (status, again["messages_erased"], again["pseudonym"]) == (200, 0, erased["pseudonym"])

        # scoped to the caller: bob's message and alice's other recipient are untouched
        status, theirs = await api.call("GET", f"/v1/messages/{bobs}", bob["api_key"])
        assert (theirs["to"], theirs["body"]) == (NUMBER, "bob's own")
        status, other = await api.call("GET", f"/v1/messages/{ids[2]}", alice["api_key"])
        assert other["body"] == "someone else"
        assert (await api.call("POST", "/v1/privacy/erase", alice["api_key"], {}))[0] == 400
        assert (await api.call("GET", "/v1/privacy/export?to=x"))[0] == 401

    stored = await dump(engine.store_url, ids[:2])
    assert NUMBER not in stored and stored.count(erased["pseudonym"]) >= 3  # two messages, one suppression
    for needle in (NUMBER, NUMBER[1:], SECRET, "Reminder", "patient"):
        assert needle not in stored, needle
    assert erased["pseudonym"] in stored
    usage = await dump(engine.store_url, ids[:2])
    assert usage.count('"usage_id"') == 2  # usage records stay, pointing at pseudonymised messages


async def test_privacy_cli_export_and_erase(make_engine, sqlite_url):
    engine = make_engine(sqlite_url, env=KEY_ENV)
    account = engine.create_account("acme")
    async with aiohttp.ClientSession() as http:
        api = Api(http, engine.base_url)
        ids = await send_all(api, account["api_key"], [
            {"channel": "email", "to": "Ada.Lovelace@Example.com", "subject": "Results", "body": SECRET},
            {"channel": "push", "to": TOKEN, "title": "Hi Ada", "body": SECRET, "data": {"k": "v"}},
        ])
        await wait_terminal(http, engine.base_url, account["api_key"], ids)

    exported = orjson.loads(engine.cli("privacy", "export", "--account", account["id"], "--to", EMAIL).stdout)
    [message] = exported["messages"]
    assert (message["id"], message["subject"], message["body"]) == (ids[0], "Results", SECRET)

    erased = engine.cli("privacy", "erase", "--account", account["id"], "--to", EMAIL)
    assert "1 messages changed" in erased.stdout and EMAIL not in erased.stdout
    erased = orjson.loads(engine.cli("privacy", "erase", "--account", account["id"], "--to", EMAIL,
                                     "--format", "json").stdout)
    assert erased["messages_erased"] == 0
    after = orjson.loads(engine.cli("privacy", "export", "--account", account["id"], "--to", EMAIL).stdout)
    assert after["messages"] == after["usage_records"] == []

    push = orjson.loads(engine.cli("privacy", "erase", "--account", account["id"], "--to", TOKEN,
                                   "--format", "json").stdout)
    assert push["messages_erased"] == 1
    stored = await dump(engine.store_url, ids)
    for needle in ("Lovelace", "lovelace", TOKEN, SECRET, "Hi Ada", "Results"):
        assert needle not in stored, needle

    unknown = engine.cli("privacy", "export", "--account", "acc_nope", "--to", EMAIL, check=False)
    assert unknown.returncode == 2 and "no account" in unknown.stderr
    env = {k: v for k, v in engine.env.items() if k != "MSGROUTE_HASH_KEY"}
    keyless = subprocess.run([sys.executable, "-m", "workers", "--config", str(engine.config_path), "privacy",
                              "erase", "--account", account["id"], "--to", NUMBER],
                             env=env, cwd=engine.workdir, capture_output=True, text=True, timeout=60, check=False)
    assert keyless.returncode != 0 and "MSGROUTE_HASH_KEY" in keyless.stderr
    assert "Traceback" not in keyless.stderr


RETENTION = """
[retention]
content_days = 0.0001          # 8.6 seconds
sweep_interval_seconds = 0.5
"""


@pytest.mark.timeout(180)
async def test_retention_removes_content_and_keeps_metadata(make_engine, store_url):
    engine = make_engine(store_url, SANDBOX_CARRIERS + DEFAULT_ROUTING + RETENTION)
    account = engine.create_account("acme")
    key = account["api_key"]
    send_at = clock.format_time(clock.now() + timedelta(minutes=10))
    async with aiohttp.ClientSession() as http:
        api = Api(http, engine.base_url)
        ids = await send_all(api, key, [
            {"channel": "sms", "to": NUMBER, "body": SECRET, "metadata": {"order": 7}},
            {"channel": "email", "to": EMAIL, "subject": "Results", "body": SECRET},
            {"channel": "push", "to": TOKEN, "title": "Hi", "body": SECRET, "data": {"k": "v"}},
        ])
        status, scheduled = await api.send(key, {"channel": "sms", "to": NUMBER, "body": "later", "send_at": send_at})
        assert status == 202
        fresh = await wait_terminal(http, engine.base_url, key, ids)
        assert {m["body"] for m in fresh.values()} == {SECRET}  # kept while young

        async def emptied():
            messages = [(await api.call("GET", f"/v1/messages/{i}", key))[1] for i in ids]
            return messages if all(m["body"] is None for m in messages) else None
        messages = await eventually(emptied, timeout=60, every=0.5)
    sms, email, push = messages
    assert (sms["to"], sms["status"], sms["carrier"], sms["units"], sms["metadata"]) == (
        NUMBER, "delivered", "sms-uk", 1, {"order": 7})
    assert [h["status"] for h in sms["status_history"]] == [h["status"] for h in fresh[ids[0]]["status_history"]]
    assert (email["subject"], email["to"]) == (None, EMAIL)
    assert (push["title"], push["data"], push["to"]) == (None, None, TOKEN)
    store = await open_store(engine.store_url)
    try:
        [held] = await store.query("SELECT body, status FROM messages WHERE id = ?", (scheduled["id"],))
        assert held == {"body": "later", "status": "scheduled"}  # not sent yet: its content is still needed
        assert len(await store.query("SELECT * FROM usage_records")) == 3
    finally:
        await store.close()
    assert "retention removed message content" in engine.log_text()


async def test_erase_reaches_free_text_that_quotes_the_address(store_url):
    """Carrier error texts and late receipts may quote the address: it is replaced there too."""
    store = await open_store(store_url, migrate=True)
    try:
        now = clock.now_iso()
        late = orjson.dumps([{"to": EMAIL, "status": "delivered"}]).decode()

        def seed(cur):
            cur.execute("INSERT INTO messages (id, account_id, channel, to_addr, body, status, error_code, "
                        "error_message, late_receipts, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        ("msg_1", "acc_1", "email", EMAIL, SECRET, "undelivered", "bounced",
                         f"550 5.1.1 <{EMAIL}>: mailbox unavailable", late, now, now))
            cur.execute("INSERT INTO status_history (message_id, seq, status, at, error_code, error_message) "
                        "VALUES (?, ?, ?, ?, ?, ?)", ("msg_1", 4, "undelivered", now, "bounced",
                                                      f"550 5.1.1 <{EMAIL}>: mailbox unavailable"))
        await store.run(seed)
        await suppressions.add(store, [("acc_1", "email", EMAIL, "bounce"), ("acc_1", "sms", EMAIL, "api"),
                                       ("acc_1", "email", "anon_x", "complaint"), ("acc_2", "email", EMAIL, "bounce")])
        assert await erase_subject(store, "acc_3", [EMAIL], "anon_x") == (0, 0)  # another account's: untouched
        assert await erase_subject(store, "acc_1", [EMAIL.upper()], "anon_x") == (1, 1)
        assert await erase_subject(store, "acc_1", [EMAIL], "anon_x") == (0, 0)
        kept = await store.query("SELECT account_id, channel, address, reason FROM suppressions ORDER BY 1, 2")
        assert [tuple(r.values()) for r in kept] == [  # each still in force, under the pseudonym
            ("acc_1", "email", "anon_x", "complaint"), ("acc_1", "sms", "anon_x", "api"),
            ("acc_2", "email", EMAIL, "bounce")]
        [row] = await store.query("SELECT * FROM messages")
        [history] = await store.query("SELECT * FROM status_history")
        assert row["error_message"] == history["error_message"] == "550 5.1.1 <anon_x>: mailbox unavailable"
        assert orjson.loads(row["late_receipts"]) == [{"to": "anon_x", "status": "delivered"}]
        assert (row["to_addr"], row["body"]) == ("anon_x", None)
    finally:
        await store.close()
