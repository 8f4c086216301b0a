"""No personal data in logs or metric labels: run varied traffic through a real engine (sends,
failures, retries, bounces, refusals, a suspension, data-subject requests) and search
everything every process logged, and /metrics, for the bodies and addresses sent."""
import aiohttp
import pytest

from tests.engine import DEFAULT_ROUTING, SANDBOX_CARRIERS, wait_terminal
from tests.integration.account_tools import HASH_KEY, Api, eventually

ABUSE = """
[abuse]
same_body_max_recipients = 5
"""
BODY = "Dear Grace Hopper, your prescription 7741-AX is ready"
SPAM = "You have WON a prize, claim it today"
NUMBERS = ["+447912345678", "+447863112358", "+14155550123"]
EMAILS = ["grace.hopper@example.com", "bounce@hopper.example", "flaky@hopper.example"]
TOKENS = ["pushtoken-9f8e7d6c5b4a", "bounce-pushtoken-1234"]
MAGIC = ["+15005550001", "+15005550002", "+15005550003"]  # fail, flaky, bounce


def needles() -> set[str]:
    # emails are logged masked with their domain (b****@hopper.example): the local parts must not show
    found = {BODY, "Grace Hopper", "7741-AX", SPAM, "prize", "grace.hopper", *EMAILS, *TOKENS}
    for number in NUMBERS:
        found |= {number, number[1:], number[-9:]}  # with and without +, and the national part
    return found


@pytest.mark.timeout(240)
async def test_no_bodies_or_addresses_in_logs_or_metrics(make_engine, sqlite_url):
    engine = make_engine(sqlite_url, SANDBOX_CARRIERS + DEFAULT_ROUTING + ABUSE,
                         env={"MSGROUTE_HASH_KEY": HASH_KEY})
    account = engine.create_account("clinic")
    spammer = engine.create_account("spammer")
    key = account["api_key"]
    messages = [{"channel": "sms", "to": n, "body": f"{BODY} ({i})"} for i, n in enumerate(NUMBERS + MAGIC)]
    messages += [{"channel": "email", "to": e, "subject": "Grace Hopper", "body": BODY} for e in EMAILS]
    messages += [{"channel": "push", "to": t, "title": "Grace Hopper", "body": BODY} for t in TOKENS]
    async with aiohttp.ClientSession() as http:
        api = Api(http, engine.base_url)
        ids = []
        for message in messages:
            status, body = await api.send(key, {**message, "metadata": {"patient": "Grace Hopper"}})
            assert status == 202, body
            ids.append(body["id"])
        for bad in ({"channel": "sms", "to": "+4479123", "body": BODY},
                    {"channel": "email", "to": "grace.hopper@", "body": BODY},
                    {"channel": "sms", "to": NUMBERS[0], "body": BODY * 100}):
            assert (await api.send(key, bad))[0] == 400
        for i in range(8):  # trips the same-body rule on the sixth distinct recipient
            await api.send(spammer["api_key"], {"channel": "sms", "to": f"+4479123450{i:02d}", "body": SPAM})

        async def suspended():
            return (await api.admin("GET", f"/accounts/{spammer['id']}"))[1]["status"] == "suspended"
        await eventually(suspended)
        final = await wait_terminal(http, engine.base_url, key, ids, timeout=120)
        assert len(final) == len(ids)
        assert (await api.call("GET", f"/v1/privacy/export?to=%2B{NUMBERS[0][1:]}", key))[0] == 200
        assert (await api.call("POST", "/v1/privacy/erase", key, {"to": EMAILS[0]}))[0] == 200
        async with http.get(f"{engine.base_url}/metrics") as resp:
            metrics_text = await resp.text()
    engine.cli("privacy", "erase", "--account", account["id"], "--to", NUMBERS[1])
    assert engine.stop() == 0
    logs = engine.log_text()
    assert '"accepted"' in logs and "+44*******678" in logs  # the traffic was logged, masked
    leaked = sorted(n for n in needles() if n in logs or n in metrics_text)
    assert leaked == [], f"personal data in logs or metrics: {leaked}"
