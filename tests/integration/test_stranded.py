"""A message stored but never published (a gateway killed between storing and publishing it)
is not left `queued` for ever: the route workers publish it again, and it goes out once."""
from datetime import timedelta

import aiohttp

from router import clock, requests
from tests.engine import DEFAULT_ROUTING, SANDBOX_CARRIERS, wait_terminal
from workers.ingest import intake
from workers.store import open_store

CONFIG = SANDBOX_CARRIERS + DEFAULT_ROUTING.replace("[routing]", "[routing]\nrequeue_stranded_after_seconds = 2")


async def test_a_stranded_queued_message_is_published_again_and_sent_once(make_engine, store_url):
    engine = make_engine(store_url, CONFIG)
    account = engine.create_account("stranded")
    store = await open_store(store_url)
    try:
        request = requests.parse({"channel": "sms", "to": "+447911123456", "body": "never published"})
        envelope, row = intake.accept(request, account["id"])
        stored_at = clock.format_time(clock.now() - timedelta(seconds=5))
        await store.insert_messages([{**row, "created_at": stored_at, "updated_at": stored_at}])
    finally:
        await store.close()
    async with aiohttp.ClientSession() as http:
        final = await wait_terminal(http, engine.base_url, account["api_key"], [envelope.id], timeout=60)
    message = final[envelope.id]
    assert message["status"] == "delivered", message
    assert [h["status"] for h in message["status_history"]] == ["queued", "routed", "sent", "delivered"]
    assert "stranded queued message published again" in engine.log_text()
